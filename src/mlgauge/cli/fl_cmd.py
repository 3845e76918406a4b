"""``mlgauge fl``: cost-effective federated learning. Plan clients per round K and local iterations E,
estimate the plan's constants from pilot runs, simulate FedAvg, or deploy it on Flower."""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import tempfile
import time
from pathlib import Path

from rich.progress import BarColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
from rich.table import Table

from mlgauge import paths
from mlgauge.cli.output import console, err_console, print_json
from mlgauge.errors import UsageError
from mlgauge.federated.costs import DEFAULT_MEANS, ClientCosts, draw_client_costs
from mlgauge.federated.planner import check_gamma

DATASETS = ("digits", "synthetic")
MODELS = ("logistic", "cnn")


def register(sub) -> None:
    p = sub.add_parser("fl", help="federated learning: plan, estimate, simulate or deploy FedAvg's K and E")
    verbs = p.add_subparsers(dest="verb", metavar="VERB", parser_class=type(p), required=True)

    plan = verbs.add_parser("plan", help="the (K, E) of least expected cost, given the convergence constants")
    _federation_args(plan, data=False)
    plan.add_argument("--a0", type=float, required=True, help="convergence constant A0 (from 'mlgauge fl estimate')")
    plan.add_argument("--b0", type=float, required=True, help="convergence constant B0 (drift)")
    plan.add_argument("--a1", type=float, default=0.0, help="convergence constant A1 (default 0)")
    plan.add_argument("--c0", type=float, help="convergence constant C0 (sampling variance; default B0)")
    plan.add_argument("--solo", type=float, default=1.0,
                      help="K = 1's rounds relative to the formula (from 'mlgauge fl estimate'; default 1)")
    _objective_args(plan)
    plan.add_argument("--surface", type=Path, metavar="CSV", help="also write the predicted cost of every (K, E)")
    plan.set_defaults(handler=execute_plan)

    simulate = verbs.add_parser("simulate", help="FedAvg on the simulator with a given K and E, to a target loss")
    _federation_args(simulate)
    _training_args(simulate)
    simulate.add_argument("-K", "--clients-per-round", type=int, required=True)
    simulate.add_argument("-E", "--local-iterations", type=int, required=True)
    simulate.add_argument("--gap", type=float, default=0.1, help="stop at loss <= F* + gap (default 0.1)")
    simulate.add_argument("--gamma", type=float, default=0.5, help="weight of energy in the reported cost (default 0.5)")
    simulate.add_argument("--max-rounds", type=int, default=500)
    simulate.add_argument("--seed", type=int, default=0, help="sampling and minibatch seed (default 0)")
    simulate.set_defaults(handler=execute_simulate)

    estimate = verbs.add_parser("estimate", help="pilot runs fit the convergence constants, then plan (and run the plan)")
    _federation_args(estimate)
    _training_args(estimate)
    _objective_args(estimate)
    estimate.add_argument("--pilot-gap", type=float, help="the pilots' looser target gap (default 2ε)")
    estimate.add_argument("--pilot-rounds", type=int, default=200, help="round limit of each pilot (default 200)")
    estimate.add_argument("--seeds", type=int, default=3,
                          help="pilot runs per setting (default 3: with one, the plan depends on luck)")
    estimate.add_argument("--run", action="store_true", help="then run the plan to the target and report its cost")
    estimate.add_argument("--flower", action="store_true",
                          help="run the pilots (and --run) on Flower: a local SuperLink and N SuperNodes; the "
                               "clients' costs are then what they measured, not --costs (unless --simulation)")  # fmt: skip
    _simulation_args(estimate, f"with --flower: {_VIRTUAL}; their rounds are costed with --costs (or drawn "
                               "costs), as on the built-in simulator")  # fmt: skip
    estimate.add_argument("--round-timeout", type=float, default=120.0, help="with --flower (default 120 s)")
    estimate.add_argument("--workdir", type=Path, help="with --flower: Flower's logs and the runs' traces")
    estimate.set_defaults(handler=execute_estimate)

    deploy = verbs.add_parser("deploy", help="FedAvg with a given K and E on Flower: local SuperLink + N SuperNodes")
    deploy.add_argument("--data", choices=DATASETS, default="digits")
    deploy.add_argument("--clients", type=int, default=3, help="N SuperNodes, one partition each (default 3)")
    deploy.add_argument("--model", choices=MODELS, default="logistic")
    _training_args(deploy)
    deploy.add_argument("-K", "--clients-per-round", type=int, required=True)
    deploy.add_argument("-E", "--local-iterations", type=int, required=True)
    deploy.add_argument("--rounds", type=int, default=10, help="at most this many rounds (default 10)")
    deploy.add_argument("--target-loss", type=float, default=0.0, help="stop once the global loss is <= this")
    deploy.add_argument("--round-timeout", type=float, default=120.0,
                        help="seconds to wait for a round's replies; later clients count as dropped (default 120)")
    deploy.add_argument("--superlink", metavar="HOST:PORT",
                        help="run on this SuperLink and its SuperNodes instead of starting them here")
    deploy.add_argument("--root-certificates", type=Path, help="the SuperLink's CA certificate (default: insecure)")
    _simulation_args(deploy, _VIRTUAL)
    deploy.add_argument("--seed", type=int, default=0)
    deploy.add_argument("--workdir", type=Path, help="Flower's logs, state and the run's trace (default: a new folder)")
    deploy.add_argument("--timeout", type=float, help="give up after this many seconds")
    deploy.add_argument("--json", action="store_true")
    deploy.set_defaults(handler=execute_deploy)


_VIRTUAL = ("the N SuperNodes are virtual, in Flower's Simulation Runtime (Ray): one process for the whole "
            "federation instead of one per client (needs mlgauge[simulation])")


def _simulation_args(p: argparse.ArgumentParser, help_text: str) -> None:
    p.add_argument("--simulation", action="store_true", help=help_text)
    p.add_argument("--client-cpus", type=int, default=1,
                   help="with --simulation: Ray CPUs per ClientApp, so at most CPUs / this train at once (default 1)")


def _check_simulation(args) -> int | None:
    """The CPUs per virtual ClientApp with --simulation, else None."""
    if not args.simulation:
        return None
    if args.client_cpus < 1:
        raise UsageError(f"--client-cpus {args.client_cpus}", hint="Give at least 1 CPU per ClientApp")
    if getattr(args, "superlink", None):
        raise UsageError("--simulation with --superlink: a simulation runs on a SuperLink started here",
                         hint="Drop --superlink to simulate here, or --simulation to run on that SuperLink's nodes")  # fmt: skip
    from mlgauge.federated.flower.deploy import check_simulation_runtime

    check_simulation_runtime()
    return args.client_cpus


def _federation_args(p: argparse.ArgumentParser, *, data: bool = True) -> None:
    if data:
        p.add_argument("--data", choices=DATASETS, default="digits", help="client data (default digits, 2 labels each)")
        p.add_argument("--model", choices=MODELS, default="logistic")
    p.add_argument("--clients", type=int, default=20, help="N clients in the federation (default 20)")
    p.add_argument("--costs", type=Path, metavar="JSON",
                   help="per-client costs {compute_s, comm_s, compute_j, comm_j: [N values]}; "
                        f"default: drawn around {DEFAULT_MEANS} with std = mean / 3")  # fmt: skip
    p.add_argument("--cost-seed", type=int, default=0, help="seed of the drawn costs (default 0)")
    p.add_argument("--json", action="store_true")


def _training_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--lr", type=float, default=0.5, help="local SGD step size (default 0.5)")
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--lr-decay", type=float, default=0.0, metavar="STEPS",
                   help="step size lr·τ/(τ + t) over global local steps t, as Li et al.'s theorem assumes; "
                        "0 keeps it constant (default)")  # fmt: skip


def _objective_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--gamma", type=float, default=0.5, help="energy's weight: 0 time only, 1 energy only (default 0.5)")
    p.add_argument("--epsilon", "--gap", dest="epsilon", type=float, default=0.1,
                   help="target: global loss <= F* + ε (default 0.1)")  # fmt: skip
    p.add_argument("--max-iterations", type=int, help="largest E to consider (default: as far as the model needs)")


def _costs(args, *, time_only: bool = False) -> ClientCosts:
    if args.clients < 1:
        raise UsageError(f"--clients {args.clients}: a federation needs at least one client", hint="Give N >= 1")
    if args.costs is None:
        return draw_client_costs(args.clients, seed=args.cost_seed)
    try:
        data = json.loads(args.costs.read_text())
        if not isinstance(data, dict):
            raise TypeError
        costs = ClientCosts.from_dict(data, time_only=time_only)
    except OSError as exc:
        raise UsageError(f"cannot read {args.costs}: {exc.strerror or exc}", hint="Give a readable JSON file") from None
    except (ValueError, TypeError):
        raise UsageError(f"{args.costs} is not a JSON object of four cost lists",
                         hint="Write {\"compute_s\": [...], \"comm_s\": [...], \"compute_j\": [...], \"comm_j\": [...]}") from None  # fmt: skip
    if costs.clients != args.clients:
        raise UsageError(f"{args.costs} describes {costs.clients} clients but --clients is {args.clients}",
                         hint=f"Pass --clients {costs.clients}")  # fmt: skip
    return costs


def _check_shape(args) -> None:
    from mlgauge.federated.fedavg import check_plan_shape

    check_plan_shape(args.clients_per_round, args.local_iterations, args.clients)


def _simulator(args, costs: ClientCosts):
    from mlgauge.data.federated import load_federation
    from mlgauge.federated.fedavg import FedAvgSimulator

    return FedAvgSimulator(load_federation(args.data, args.clients), args.model, costs, lr=args.lr, batch=args.batch,
                           lr_decay=args.lr_decay)  # fmt: skip


def _plan_table(chosen, title: str, *, energy_known: bool = True) -> Table:
    table = Table(title=title)
    for column in ("K*", "E*", "rounds", "time", "energy", "cost"):
        table.add_column(column, justify="right")
    energy = f"{chosen.energy_j:,.3f} J" if energy_known else "not metered"
    table.add_row(str(chosen.clients), str(chosen.iterations), f"{chosen.rounds:,.1f}", f"{chosen.time_s:,.1f} s",
                  energy, f"{chosen.cost:,.3f}")  # fmt: skip
    return table


def _write_surface(path: Path, chosen) -> None:
    s = chosen.surface
    lines = ["clients,iterations,rounds,time_s,energy_j,cost"]
    for i, k in enumerate(s.clients):
        for j, e in enumerate(s.iterations):
            lines.append(f"{k},{e},{s.rounds[i, j]:.6g},{s.time_s[i, j]:.6g},{s.energy_j[i, j]:.6g},{s.cost[i, j]:.6g}")
    try:
        paths.write_text_atomic(path, "\n".join(lines) + "\n")
    except OSError as exc:
        raise UsageError(f"cannot write {path}: {exc.strerror or exc}", hint="Choose a writable path") from None


def execute_plan(args) -> int:
    from mlgauge.federated.bound import ConvergenceBound
    from mlgauge.federated.planner import plan

    gamma = check_gamma(args.gamma)
    costs = _costs(args, time_only=gamma == 0)
    chosen = plan(costs, ConvergenceBound(args.a0, args.b0, args.clients, a1=args.a1, c0=args.c0, solo=args.solo), gamma=gamma, epsilon=args.epsilon,
                  max_iterations=args.max_iterations)  # fmt: skip
    if args.surface is not None:
        _write_surface(args.surface, chosen)
    if args.json:
        print_json({"plan": chosen.to_dict(), "surface": str(args.surface) if args.surface else None})
        return 0
    console.print(_plan_table(chosen, f"Plan for {args.clients} clients, γ = {gamma:g}, ε = {args.epsilon:g}"))
    return 0


def _run_with_progress(sim, k: int, e: int, *, target: float, max_rounds: int, seed: int, label: str, quiet: bool):
    if quiet:
        return sim.run(k, e, target=target, max_rounds=max_rounds, seed=seed)
    with Progress(SpinnerColumn(), TextColumn("{task.description}"), BarColumn(), TextColumn("{task.fields[loss]}"),
                  TimeElapsedColumn(), console=err_console, transient=True) as bar:  # fmt: skip
        task = bar.add_task(label, total=max_rounds, loss="")
        return sim.run(k, e, target=target, max_rounds=max_rounds, seed=seed,
                       on_round=lambda r: bar.update(task, completed=r.number, loss=f"loss {r.loss:.4f}"))  # fmt: skip


def _trace_summary(trace, gamma: float) -> dict:
    summary = {**trace.to_dict(), "cost": trace.cost(gamma), "gamma": gamma}
    return {key: _finite(v) if isinstance(v, float) else v for key, v in summary.items()}


def execute_simulate(args) -> int:
    gamma = check_gamma(args.gamma)
    _check_shape(args)
    sim = _simulator(args, _costs(args))
    optimum = sim.optimum()
    trace = _run_with_progress(sim, args.clients_per_round, args.local_iterations, target=optimum + args.gap,
                               max_rounds=args.max_rounds, seed=args.seed,
                               label=f"FedAvg K={args.clients_per_round} E={args.local_iterations}", quiet=args.json)  # fmt: skip
    summary = {**_trace_summary(trace, gamma), "optimum": optimum, "data": sim.data.name, "model": args.model}
    if args.json:
        print_json(summary)
        return 0 if trace.reached else 1
    _print_trace(trace, gamma, optimum, sim.data.name)
    return 0 if trace.reached else 1


def _print_trace(trace, gamma: float, optimum: float, data: str) -> None:
    table = Table(title=f"FedAvg on {data}: K = {trace.clients_per_round}, E = {trace.iterations}")
    for column in ("reached", "rounds", "final gap", "time", "energy", f"cost (γ = {gamma:g})"):
        table.add_column(column, justify="right")
    final = trace.rounds[-1].loss - optimum if trace.rounds else float("nan")
    table.add_row("yes" if trace.reached else "[red]no[/red]", str(len(trace.rounds)), f"{final:.4f}",
                  f"{trace.time_s:,.1f} s", _joules(trace.energy_j), _number(trace.cost(gamma)))  # fmt: skip
    console.print(table)


def execute_estimate(args) -> int:
    from mlgauge.federated.estimator import estimate
    from mlgauge.federated.flower.measured import as_trace, measured_costs
    from mlgauge.federated.planner import plan

    gamma = check_gamma(args.gamma)
    if args.seeds < 1 or args.pilot_rounds < 1:
        raise UsageError(f"--seeds {args.seeds}, --pilot-rounds {args.pilot_rounds}", hint="Both must be >= 1")
    if args.flower and args.round_timeout <= 0:
        raise UsageError(f"--round-timeout {args.round_timeout}", hint="Give a positive number of seconds")
    if args.simulation and not args.flower:
        raise UsageError("--simulation without --flower: the built-in simulator needs no Flower",
                         hint="Add --flower to run the pilots in Flower's Simulation Runtime")  # fmt: skip
    # Real SuperNodes measure their own costs; virtual ones share this machine, so with --simulation
    # the rounds come from Flower and their costs from the cost model, as on the built-in simulator.
    measuring = args.flower and not args.simulation
    if measuring and args.costs is not None:
        raise UsageError("--costs with --flower: on Flower the clients' costs are what they measure",
                         hint="Drop --costs, add --simulation to cost Flower's rounds with them, "
                              "or drop --flower to plan for the given costs")  # fmt: skip
    if measuring and gamma > 0:
        _check_local_meter(gamma)
    # On Flower the simulator only gives F*: the deployment's loss is the same objective on the same data.
    sim = _simulator(args, _costs(args))
    optimum = sim.optimum()
    started = time.perf_counter()
    with contextlib.ExitStack() as stack:
        bar = stack.enter_context(Progress(SpinnerColumn(), TextColumn("{task.description}"), TimeElapsedColumn(),
                                           console=err_console, transient=True, disable=args.json))  # fmt: skip
        task = bar.add_task("pilot runs")
        deployment = stack.enter_context(_local_runs(args, bar, task)) if args.flower else None

        def on_flower(trace: dict):
            return as_trace(trace) if measuring else as_trace(trace).costed(sim.costs)

        def pilot(k: int, e: int, target: float, rounds: int, seed: int):
            bar.update(task, description=f"pilot K={k} E={e} seed {seed}")
            if deployment is not None:
                return on_flower(deployment.run(k, e, target_loss=target, max_rounds=rounds, seed=seed))
            return sim.run(k, e, target=target, max_rounds=rounds, seed=seed)

        fitted = estimate(pilot, args.clients, optimum=optimum, gap=args.pilot_gap or 2 * args.epsilon,
                          seeds=range(args.seeds), max_rounds=args.pilot_rounds)  # fmt: skip
        costs = sim.costs
        if measuring:
            costs = ClientCosts.from_dict(measured_costs(deployment.traces), time_only=gamma == 0)
        chosen = plan(costs, fitted.bound, gamma=gamma, epsilon=args.epsilon, max_iterations=args.max_iterations)
        measured, limit = None, _run_limit(chosen.rounds)
        if args.run and deployment is not None:
            bar.update(task, description=f"plan K={chosen.clients} E={chosen.iterations}")
            measured = on_flower(deployment.run(chosen.clients, chosen.iterations, target_loss=optimum + args.epsilon,
                                                max_rounds=limit, seed=0))  # fmt: skip
    if args.run and deployment is None:
        measured = _run_with_progress(sim, chosen.clients, chosen.iterations, target=optimum + args.epsilon,
                                      max_rounds=limit, seed=0, label=f"plan K={chosen.clients} E={chosen.iterations}",
                                      quiet=args.json)  # fmt: skip
    payload = {"data": sim.data.name, "model": args.model, "optimum": optimum, "estimate": fitted.to_dict(),
               "pilot_cost": {"time_s": fitted.spent(0.0), "energy_j": _finite(fitted.spent(1.0)),
                              "cost": _finite(fitted.spent(gamma))},
               "costs": "measured on Flower" if measuring else ("given" if args.costs else "drawn"),
               "client_costs": costs.to_dict(), "plan": chosen.to_dict(),
               "run": {**_trace_summary(measured, gamma), "max_rounds": limit} if measured else None,
               "workdir": str(deployment.workdir) if deployment else None,
               "seconds": time.perf_counter() - started}  # fmt: skip
    unreached = 1 if measured is not None and not measured.reached else 0  # as fl simulate: the target was missed
    if args.json:
        print_json(payload)
        return unreached
    where = ("Flower's Simulation Runtime" if args.simulation else "Flower, local SuperNodes") if deployment else sim.data.name
    pilots = Table(title=f"Pilot runs to F* + {fitted.gap:g} on {where} ({args.clients} clients)")
    for column in ("K", "E", "rounds", "model's rounds", "reached", "time", "energy"):
        pilots.add_column(column, justify="right")
    for p in fitted.pilots:
        pilots.add_row(str(p.clients_per_round), str(p.iterations), str(len(p.rounds)), f"{fitted.fitted_rounds(p):.1f}",
                       "yes" if p.reached else "[red]no[/red]", f"{p.time_s:,.1f} s", _joules(p.energy_j))  # fmt: skip
    console.print(pilots)
    b = fitted.bound
    console.print(f"A0 = {b.a0:.4g}, A1 = {b.a1:.4g}, B0 = {b.b0:.4g}, C0 = {b.c0:.4g}, K = 1 × {b.solo:.3g} "
                  f"(misfit {fitted.residual:.0%}); "
                  f"the pilots cost {fitted.spent(0.0):,.1f} s and {_joules(fitted.spent(1.0))}")  # fmt: skip
    if measuring:
        console.print(f"client costs as measured by the SuperNodes{'' if gamma > 0 else ' (time only)'}; "
                      f"traces and logs: {deployment.workdir}")  # fmt: skip
    elif deployment is not None:
        console.print(f"rounds from Flower's Simulation Runtime, costed with the {payload['costs']} client costs; "
                      f"traces and logs: {deployment.workdir}")  # fmt: skip
    console.print(_plan_table(chosen, f"Plan: γ = {gamma:g}, ε = {args.epsilon:g}", energy_known=not measuring))
    if measured is not None:
        _print_trace(measured, gamma, optimum, where)
        if not measured.reached:
            console.print(f"[yellow]the plan did not reach F* + {args.epsilon:g} within {limit:,} rounds, ten times "
                          f"the {chosen.rounds:.1f} the round model expects: the model misjudges this setting "
                          "(see where the pilots' rounds and the model's differ)[/yellow]")  # fmt: skip
    return unreached


def _run_limit(predicted_rounds: float) -> int:
    """Rounds the plan's run may take: ten times the model's prediction, at least 100. A run still short
    of the target by then shows the model wrong there; going on could take hours on Flower."""
    return max(100, math.ceil(10 * predicted_rounds))


def _check_local_meter(gamma: float) -> None:
    """Before any pilot runs: local SuperNodes measure energy with this machine's meter, if any reads."""
    from mlgauge.energy.choose import choose_meter

    meter, why = choose_meter("auto")
    if meter is None:
        raise UsageError(f"γ = {gamma:g} weighs energy, but the local SuperNodes could not measure it "
                         f"({why.removeprefix('not measured: ')})",
                         hint="Plan time only (--gamma 0), or run where a RAPL or NVML meter reads")  # fmt: skip
    meter.stop()


def _number(value: float, unit: str = "") -> str:
    """NaN is what an unmetered energy turns into; say so rather than print it."""
    return f"{value:,.3f}{unit}" if math.isfinite(value) else "not metered"


def _joules(value: float) -> str:
    return _number(value, " J")


def _finite(value: float) -> float | None:
    return value if math.isfinite(value) else None


def execute_deploy(args) -> int:
    from mlgauge.federated.flower.deploy import LocalRuns, run_app, run_config
    from mlgauge.federated.flower.measured import client_summary, measured_costs

    if args.clients < 1:
        raise UsageError(f"--clients {args.clients}: a federation needs at least one client", hint="Give N >= 1")
    _check_shape(args)
    if args.rounds < 1 or args.round_timeout <= 0 or args.lr <= 0 or args.batch < 1 or args.lr_decay < 0:
        raise UsageError(f"--rounds {args.rounds}, --round-timeout {args.round_timeout}, --lr {args.lr}, "
                         f"--batch {args.batch}, --lr-decay {args.lr_decay}",
                         hint="Give rounds >= 1, a positive timeout and lr, batch >= 1, lr decay >= 0")  # fmt: skip
    client_cpus = _check_simulation(args)
    workdir = _flower_workdir(args)
    base = _flower_base(args)
    with Progress(SpinnerColumn(), TextColumn("{task.description}"), BarColumn(), TimeElapsedColumn(),
                  console=err_console, transient=True, disable=args.json) as bar:  # fmt: skip
        task = bar.add_task("starting Flower", total=args.rounds)

        def progress(trace: dict) -> None:
            last = trace["rounds"][-1] if trace["rounds"] else None
            text = f"round {last['number']}: loss {last['loss']:.4f}" if last else "waiting for the first round"
            bar.update(task, completed=len(trace["rounds"]), description=text)

        if args.superlink:
            config = run_config(base, args.clients_per_round, args.local_iterations, target_loss=args.target_loss,
                                max_rounds=args.rounds, seed=args.seed)  # fmt: skip
            trace = run_app(args.superlink, config, workdir, insecure=args.root_certificates is None,
                            root_certificates=args.root_certificates, on_progress=progress, timeout_s=args.timeout)  # fmt: skip
        else:
            bar.update(task, description=_starting(args))
            with LocalRuns(base, workdir, on_progress=progress, timeout_s=args.timeout, client_cpus=client_cpus) as local:
                trace = local.run(args.clients_per_round, args.local_iterations, target_loss=args.target_loss,
                                  max_rounds=args.rounds, seed=args.seed)  # fmt: skip
    summary = client_summary(trace)
    virtual = client_cpus is not None
    costs_path = None if virtual else workdir / "client_costs.json"  # virtual nodes' timings are not devices'
    if costs_path is not None:
        paths.write_text_atomic(costs_path, json.dumps(measured_costs(trace), indent=1) + "\n")
    if args.json:
        print_json({"workdir": str(workdir), "trace": trace, "clients": summary,
                    "costs": str(costs_path) if costs_path else None})  # fmt: skip
        return 0
    _print_deployment(trace, summary, workdir, virtual=virtual)
    if costs_path is not None:
        console.print(f"measured costs for 'mlgauge fl plan --costs': {costs_path}")
    return 0


def _print_deployment(trace: dict, summary: list[dict], workdir: Path, *, virtual: bool) -> None:
    config = trace["config"]
    nodes = "virtual SuperNodes (Simulation Runtime)" if virtual else "SuperNodes"
    rounds = Table(title=f"FedAvg on Flower: {config['num-clients']} {nodes}, K = {config['clients-per-round']}, "
                         f"E = {config['local-iterations']}")  # fmt: skip
    for column in ("round", "loss", "seconds", "answered", "dropped"):
        rounds.add_column(column, justify="right")
    for r in trace["rounds"]:
        dropped = f"[yellow]{len(r['dropped'])}[/yellow]" if r["dropped"] else "0"
        rounds.add_row(str(r["number"]), f"{r['loss']:.4f}", f"{r['wall_s']:.1f}", str(len(r["clients"])), dropped)
    console.print(rounds)
    for r in trace["rounds"]:
        if r["dropped"]:
            console.print(f"[yellow]round {r['number']}: {len(r['dropped'])} of {len(r['sampled'])} sampled clients did "
                          f"not answer; it was averaged over the {len(r['clients'])} that did[/yellow]")  # fmt: skip
    clients = Table(title="Measured per client (communication = round trip - computation, incl. ClientApp start)")
    for column in ("partition", "rounds", "compute s / iteration", "communication s", "compute J / iteration"):
        clients.add_column(column, justify="right")
    for c in summary:
        joules = "not measured" if c["compute_j_per_iteration"] is None else f"{c['compute_j_per_iteration']:.3g}"
        clients.add_row(str(c["partition"]), str(c["rounds"]), f"{c['compute_s_per_iteration']:.4f}", f"{c['comm_s']:.2f}", joules)
    console.print(clients)
    if virtual:
        console.print("virtual SuperNodes share this machine: their communication is the Simulation Runtime's "
                      "scheduling (in the first round, Ray starting), not a network's, so no costs file is "
                      "written for 'mlgauge fl plan'")  # fmt: skip
    console.print(f"logs and trace: {workdir}")


def _local_runs(args, bar: Progress, task):
    """A local Flower federation for ``fl estimate --flower``, its progress on ``bar``."""
    from mlgauge.federated.flower.deploy import LocalRuns

    client_cpus = _check_simulation(args)
    workdir = _flower_workdir(args)

    def progress(trace: dict) -> None:
        if trace["rounds"]:
            last, config = trace["rounds"][-1], trace["config"]
            bar.update(task, description=f"K={config['clients-per-round']} E={config['local-iterations']}: "
                                         f"round {last['number']}, loss {last['loss']:.4f}")  # fmt: skip

    bar.update(task, description=_starting(args))
    return LocalRuns(_flower_base(args), workdir, on_progress=progress, client_cpus=client_cpus)


def _starting(args) -> str:
    if args.simulation:
        return f"starting a SuperLink and Flower's Simulation Runtime ({args.clients} virtual SuperNodes)"
    return f"starting a SuperLink and {args.clients} SuperNodes"


def _flower_base(args) -> dict:
    """The run config every Flower run of one command shares: data, model, N, optimizer, round timeout."""
    return {"dataset": args.data, "model": args.model, "num-clients": args.clients, "lr": args.lr,
            "lr-decay": args.lr_decay, "batch": args.batch, "round-timeout": args.round_timeout}  # fmt: skip


def _flower_workdir(args) -> Path:
    """--workdir, or a new folder: where Flower's logs, state and the runs' traces go."""
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="mlgauge-fl-"))
    paths.ensure_writable_dir(workdir, "Flower work folder")
    return workdir
