"""`make mutation`'s ledger: the results of a run outlive the checkout it ran in, so the
next run goes on from them (mutmut runs only the mutants without a result)."""

from __future__ import annotations

import json

from tests import mutation


def test_a_runs_results_go_through_the_ledger_into_the_next_checkouts_record(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(mutation, "LEDGER", tmp_path / "ledger.json")
    source = tmp_path / "src/marketdata/gaps.py"
    source.parent.mkdir(parents=True)
    source.touch()
    meta = tmp_path / "mutants/src/marketdata/gaps.py.meta"
    meta.parent.mkdir(parents=True)
    hashes = {"x_gaps_in": "ab12", "xǁGapǁ__init__": "cd34"}
    codes = {
        "marketdata.gaps.x_gaps_in__mutmut_1": 1,  # killed
        "marketdata.gaps.x_gaps_in__mutmut_2": 0,  # survived
        "marketdata.gaps.x_gaps_in__mutmut_3": 37,  # rejected by mypy
        "marketdata.gaps.x_gaps_in__mutmut_4": -24,  # timed out (SIGXCPU)
        "marketdata.gaps.x_gaps_in__mutmut_10": 3,  # killed (pytest's internal error)
        "marketdata.gaps.xǁGapǁ__init____mutmut_1": 33,  # no test reached it: not kept
        "marketdata.gaps.xǁGapǁ__init____mutmut_2": None,  # not run yet: not kept
    }
    mutation.write_meta(meta, codes, hashes)

    assert mutation.record() == 5
    assert json.loads(mutation.LEDGER.read_text()) == {
        "src/marketdata/gaps.py": {
            "hashes": hashes,
            "results": {
                "marketdata.gaps.x_gaps_in": {"0": [2], "1": [1, 10], "36": [4], "37": [3]}
            },
        }
    }

    meta.unlink()  # a new checkout: mutants/ is gone, the ledger is committed
    assert mutation.seed() == 5
    seeded = json.loads(meta.read_text())
    assert seeded["hash_by_function_name"] == hashes
    assert seeded["exit_code_by_key"] == {
        "marketdata.gaps.x_gaps_in__mutmut_1": 1,
        "marketdata.gaps.x_gaps_in__mutmut_2": 0,
        "marketdata.gaps.x_gaps_in__mutmut_3": 37,
        "marketdata.gaps.x_gaps_in__mutmut_4": 36,
        "marketdata.gaps.x_gaps_in__mutmut_10": 1,
    }
    # a record mutmut keeps in this checkout is never overwritten by the ledger's, and a
    # file gone since is not seeded
    assert mutation.seed() == 0
    meta.unlink()
    source.unlink()
    assert mutation.seed() == 0 and not meta.exists()


def test_a_run_whose_mutants_folder_lost_earlier_results_keeps_them_in_the_ledger(
    tmp_path, monkeypatch
):
    """mutmut makes its record afresh when its configuration changes, so a run may end with
    only its own results in mutants/: the ledger keeps the earlier results of the functions
    that hash the same (a result of this run replaces one of the same mutant), and drops
    those of functions changed or gone since."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(mutation, "LEDGER", tmp_path / "ledger.json")
    mutation.LEDGER.write_text(
        json.dumps(
            {
                "src/marketdata/gaps.py": {
                    "hashes": {"x_gaps_in": "ab12", "x_holes": "ef56", "x_gone": "0000"},
                    "results": {
                        "marketdata.gaps.x_gaps_in": {"0": [2], "1": [1], "37": [3]},
                        "marketdata.gaps.x_holes": {"1": [1, 2]},
                        "marketdata.gaps.x_gone": {"1": [1]},
                    },
                }
            }
        )
    )
    meta = tmp_path / "mutants/src/marketdata/gaps.py.meta"
    meta.parent.mkdir(parents=True)
    hashes = {"x_gaps_in": "ab12", "x_holes": "9999"}  # x_holes changed, x_gone removed
    codes = {
        "marketdata.gaps.x_gaps_in__mutmut_1": None,  # lost here: the ledger's stays
        "marketdata.gaps.x_gaps_in__mutmut_2": 1,  # a survivor killed by a new test
        "marketdata.gaps.x_gaps_in__mutmut_3": None,
        "marketdata.gaps.x_holes__mutmut_1": 0,  # run again after its change
        "marketdata.gaps.x_holes__mutmut_2": None,
    }
    mutation.write_meta(meta, codes, hashes)

    assert mutation.record() == 4
    assert json.loads(mutation.LEDGER.read_text()) == {
        "src/marketdata/gaps.py": {
            "hashes": hashes,
            "results": {
                "marketdata.gaps.x_gaps_in": {"1": [1, 2], "37": [3]},
                "marketdata.gaps.x_holes": {"0": [1]},
            },
        }
    }


def test_the_mutants_mypy_rejected_are_ordered_before_every_other():
    # a stand-in for mutmut's module: the two names the run's loop calls through
    import types

    rejected = {"m.x_f__mutmut_2": "error", "m.x_g__mutmut_1": "error"}
    # a package's mutant is named with "__init__." and looked up without it
    cost = {"m.x_f__mutmut_1": 3.0, "m.x_f__mutmut_2": 3.0, "m.__init__.x_g__mutmut_1": 0.5}
    mutmut_main = types.SimpleNamespace(
        filter_mutants_with_type_checker=lambda: dict(rejected),
        estimated_worst_case_time=cost.__getitem__,
    )

    mutation._rejected_first(mutmut_main)
    found = mutmut_main.filter_mutants_with_type_checker()
    order = sorted(cost, key=mutmut_main.estimated_worst_case_time)

    assert found == rejected
    assert set(order[:2]) == {"m.x_f__mutmut_2", "m.__init__.x_g__mutmut_1"}
    assert order[2] == "m.x_f__mutmut_1"
    assert mutmut_main.estimated_worst_case_time("m.x_f__mutmut_1") == 3.0
