"""Running under systemd: the units, installing them, and what systemctl knows of them."""
