"""``mlgauge fl``: plan, simulate and estimate from the command line, JSON out, and bad input refused
in one line before any work."""

from __future__ import annotations

import json

import pytest

from mlgauge.cli import main
from mlgauge.federated.bound import ConvergenceBound
from mlgauge.federated.costs import draw_client_costs
from mlgauge.federated.planner import plan


def _run(capsys, argv):
    code = main(argv)
    out, err = capsys.readouterr()
    return code, out, err


def test_plan_prints_the_planners_answer_and_writes_the_surface(capsys, tmp_path):
    surface = tmp_path / "surface.csv"
    code, out, _ = _run(capsys, ["fl", "plan", "--clients", "8", "--a0", "40", "--a1", "5", "--b0", "0.1", "--c0", "2",
                                 "--gamma", "0.5", "--surface", str(surface), "--json"])  # fmt: skip
    assert code == 0
    got = json.loads(out)["plan"]
    expected = plan(draw_client_costs(8), ConvergenceBound(40, 0.1, 8, a1=5, c0=2), gamma=0.5, epsilon=0.1)
    assert (got["clients"], got["iterations"]) == (expected.clients, expected.iterations)
    lines = surface.read_text().splitlines()
    assert lines[0] == "clients,iterations,rounds,time_s,energy_j,cost"
    assert len(lines) - 1 == 8 * expected.surface.iterations.size
    assert min(float(line.split(",")[-1]) for line in lines[1:]) == pytest.approx(expected.cost, rel=1e-5)


def test_plan_reads_measured_costs_from_a_file(capsys, tmp_path):
    costs = draw_client_costs(4, seed=3)
    path = tmp_path / "costs.json"
    path.write_text(json.dumps(costs.to_dict()))
    code, out, _ = _run(capsys, ["fl", "plan", "--clients", "4", "--costs", str(path), "--a0", "10", "--b0", "1", "--json"])
    expected = plan(costs, ConvergenceBound(10, 1, 4), gamma=0.5, epsilon=0.1)
    assert code == 0 and json.loads(out)["plan"]["cost"] == pytest.approx(expected.cost)


def test_simulate_reaches_a_loose_target_and_reports_its_cost(capsys):
    code, out, _ = _run(capsys, ["fl", "simulate", "--clients", "5", "-K", "2", "-E", "3", "--gap", "0.5", "--gamma", "1",
                                 "--json"])  # fmt: skip
    result = json.loads(out)
    assert code == 0 and result["reached"] and result["loss"][-1] <= result["optimum"] + 0.5
    assert result["cost"] == pytest.approx(result["energy_j"]) and result["rounds"] == len(result["loss"])


def test_a_target_not_reached_exits_1(capsys):
    code, out, _ = _run(capsys, ["fl", "simulate", "--clients", "5", "-K", "1", "-E", "1", "--gap", "0.01",
                                 "--max-rounds", "3", "--json"])  # fmt: skip
    assert code == 1 and json.loads(out)["reached"] is False


def test_estimate_fits_plans_and_runs_the_plan(capsys):
    code, out, _ = _run(capsys, ["fl", "estimate", "--clients", "10", "--epsilon", "0.3", "--seeds", "1", "--run", "--json"])
    result = json.loads(out)
    assert code == 0
    assert len(result["estimate"]["pilots"]) == 4 and result["estimate"]["gap"] == pytest.approx(0.6)
    assert result["pilot_cost"]["time_s"] > 0
    assert result["run"]["reached"]
    assert [result["run"]["clients_per_round"], result["run"]["iterations"]] == \
        [result["plan"]["clients"], result["plan"]["iterations"]]  # fmt: skip


@pytest.mark.parametrize(
    ("argv", "needle"),
    [
        (["fl", "simulate", "--clients", "5", "-K", "6", "-E", "2"], "K = 6 clients per round, but there are 5"),
        (["fl", "simulate", "--clients", "5", "-K", "2", "-E", "0"], "E = 0 local iterations"),
        (["fl", "simulate", "--clients", "5", "-K", "2", "-E", "2", "--gamma", "1.5"], "γ = 1.5 is outside [0, 1]"),
        (["fl", "plan", "--a0", "1", "--b0", "1", "--gamma", "-0.1"], "γ = -0.1 is outside [0, 1]"),
        (["fl", "plan", "--a0", "-1", "--b0", "1"], "all must be >= 0"),
        (["fl", "plan", "--a0", "1", "--b0", "1", "--costs", "/nonexistent.json"], "cannot read /nonexistent.json"),
        (["fl", "deploy", "--clients", "3", "-K", "4", "-E", "2"], "K = 4 clients per round, but there are 3"),
        (["fl", "deploy", "--clients", "3", "-K", "2", "-E", "2", "--round-timeout", "0"], "--round-timeout 0"),
        (["fl", "simulate", "--data", "mnist", "-K", "1", "-E", "1"], "invalid choice: 'mnist'"),
        (["fl", "simulate", "--clients", "5", "-K", "2", "-E", "2", "--lr-decay", "-1"], "lr decay -1"),
        (["fl", "estimate", "--clients", "3", "--flower", "--round-timeout", "0"], "--round-timeout 0"),
        (["fl", "estimate", "--clients", "3", "--simulation"], "--simulation without --flower"),
        (["fl", "deploy", "-K", "2", "-E", "2", "--simulation", "--superlink", "10.0.0.1:9093"], "--simulation with --superlink"),
        (["fl", "deploy", "-K", "2", "-E", "2", "--simulation", "--client-cpus", "0"], "--client-cpus 0"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(capsys, argv, needle):
    code, out, err = _run(capsys, argv)
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 2 and len(lines) == 1 and lines[0].startswith("error: ") and needle in lines[0], err
    assert out == ""


def test_the_plans_run_stops_at_ten_times_its_predicted_rounds_and_says_so(capsys, monkeypatch):
    import mlgauge.cli.fl_cmd as fl_cmd

    assert (fl_cmd._run_limit(3.2), fl_cmd._run_limit(31.5)) == (100, 315)
    monkeypatch.setattr(fl_cmd, "_run_limit", lambda predicted: 2)  # far too few for any plan here
    argv = ["fl", "estimate", "--clients", "10", "--epsilon", "0.3", "--seeds", "1", "--run"]
    code, out, _ = _run(capsys, [*argv, "--json"])
    run = json.loads(out)["run"]
    assert code == 1 and run["reached"] is False and run["rounds"] == run["max_rounds"] == 2
    code, out, _ = _run(capsys, argv)
    assert code == 1 and "the plan did not reach F* + 0.3 within 2 rounds" in " ".join(out.split())


def test_a_flower_estimate_that_weighs_energy_stops_before_any_pilot_where_no_meter_reads(capsys, monkeypatch):
    import mlgauge.energy.choose as choose

    monkeypatch.setattr(choose, "choose_meter", lambda name="auto": (None, "not measured: no RAPL or NVML here"))
    code, out, err = _run(capsys, ["fl", "estimate", "--clients", "3", "--flower", "--gamma", "0.5"])
    assert code == 2 and out == "" and err.count("\n") == 1
    assert "γ = 0.5 weighs energy, but the local SuperNodes could not measure it (no RAPL or NVML here)" in err


def test_a_simulation_without_ray_says_which_extra_to_install(capsys, monkeypatch, tmp_path):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "ray" else real(name, *a))
    workdir = tmp_path / "fl"
    code, out, err = _run(capsys, ["fl", "deploy", "-K", "2", "-E", "2", "--simulation", "--workdir", str(workdir)])
    assert code == 2 and out == "" and err.count("\n") == 1
    assert "needs Ray, which is not installed here" in err and "mlgauge[simulation]" in err
    assert not workdir.exists()  # refused before anything was started or written


def test_costs_for_another_federation_size_are_refused(capsys, tmp_path):
    path = tmp_path / "costs.json"
    path.write_text(json.dumps(draw_client_costs(3).to_dict()))
    code, _, err = _run(capsys, ["fl", "plan", "--clients", "4", "--costs", str(path), "--a0", "1", "--b0", "1"])
    assert code == 2 and "describes 3 clients but --clients is 4" in err
    path.write_text("[1, 2]")
    code, _, err = _run(capsys, ["fl", "plan", "--clients", "4", "--costs", str(path), "--a0", "1", "--b0", "1"])
    assert code == 2 and "is not a JSON object of four cost lists" in err


def test_a_deployments_costs_without_energy_plan_time_only(capsys, tmp_path):
    path = tmp_path / "client_costs.json"
    path.write_text(json.dumps({"compute_s": [0.1, 0.2, 0.15], "comm_s": [2.0, 2.5, 1.0],
                                "compute_j": [None] * 3, "comm_j": [None] * 3}))  # fmt: skip
    argv = ["fl", "plan", "--clients", "3", "--costs", str(path), "--a0", "10", "--b0", "1", "--json"]
    code, out, _ = _run(capsys, [*argv, "--gamma", "0"])
    assert code == 0 and json.loads(out)["plan"]["clients"] >= 1
    code, _, err = _run(capsys, [*argv, "--gamma", "0.5"])
    assert code == 2 and "compute_j was not measured for client(s) 0, 1, 2" in err and "--gamma 0" in err
    assert "Traceback" not in err


def test_estimate_on_flower_measures_its_own_costs(capsys, tmp_path):
    path = tmp_path / "costs.json"
    path.write_text(json.dumps(draw_client_costs(3).to_dict()))
    code, _, err = _run(capsys, ["fl", "estimate", "--clients", "3", "--flower", "--costs", str(path)])
    assert code == 2 and "--costs with --flower" in err and "Traceback" not in err
