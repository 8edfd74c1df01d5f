"""Pure analytics over candle columns: indicators, calendar aggregates, ROI, comparisons."""
