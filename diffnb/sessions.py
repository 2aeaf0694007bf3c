"""One borrowed-GPU session planned ahead: its calls, what each carries, what should finish.

A session has ``device_minutes`` of device time (15), of which a machine's start takes about
two; each call runs at most 10 minutes and carries at most 64 MiB with the tree; the machine
forgets everything 30 s after a call and at the session's end. The planner takes what is already
done (the committed ``results[/<profile>]/pipeline.json``, the kept weights, any resume point
unpacked here) and simulates the queue's own rules (``diffnb.pipeline``) call by call, with the
stages' FLOP estimates calibrated by the seconds measured on the GPU so far:
  * a stage waits until what it needs has arrived (the data, the wheels, the FID weights, the
    weights of a model trained in an earlier session) or has been trained in this one;
  * a training stage is started only if it is expected to finish within the session, unless
    it has progress already or needs more than a whole session: a training cut at the session's
    end goes on in the next one from its resume point, which ``diffnb.weights keep`` commits
    into git history (tens of MB, so only where a fresh session could not do without it);
  * a training cut by a call's deadline goes on in the next call; another stage that would
    not fit what is left of a call waits for the next one.
Carries are ordered by need (data and stamps, resume points, wheels, FID weights, earlier models)
and only what a stage of this session uses is carried. Every number is an estimate.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import torch

from diffnb import carry, checkpoints, config, runtime, stages

START_S = 120          # a machine's start, counted in the session's device time
CALL_LIMIT_S = 600     # one command
COMMAND_S = 60         # inside a command, besides the queue: receive, pip, imports, pack
GAP_S = 30             # between calls: transfers, the reply, the next call (the machine idles)
SESSION_MINUTES = 15.0  # device time of a lent session, as the device tool lends it now


@dataclass
class Call:
    number: int
    deadline_s: int
    session_left_s: int
    carry: str | None = None
    carry_bytes: int = 0
    finishes: list[str] = field(default_factory=list)
    works_on: list[str] = field(default_factory=list)


@dataclass
class SessionPlan:
    calls: list[Call]
    files: dict[str, Path]            # what to carry, in order ({destination: source})
    expected: dict[str, float]        # stage -> expected seconds left
    rate: str                         # how the estimates were calibrated
    left_after: list[str]             # stages expected to be pending after this session


def gpu_name(state: dict) -> str | None:
    """The GPU the committed stages were measured on (the most frequent non-CPU device)."""
    names = [s.get("device") for s in state["stages"].values() if s.get("device") not in
             (None, "cpu", "mps")]
    return max(set(names), key=names.count) if names else None


def expected(pending: list[stages.Stage], profile: runtime.Profile, *, state: dict) -> tuple:
    """Seconds left per pending stage on the GPU, and how they were calibrated."""
    name, cuda = gpu_name(state), torch.device("cuda")
    out = {s.name: stages.expected_seconds(s, profile, device=cuda, state=state,
                                           device_name=name or "-")
           for s in pending}
    if name is None:
        rate = f"assumed {stages.ASSUMED_TFLOPS['cuda']} TFLOP/s, nothing measured yet"
    else:
        rate = (f"calibrated on {name}: x{stages.calibration(state, name, train=True):.2f} "
                f"(training), x{stages.calibration(state, name):.2f} (other stages)")
    return out, rate


def candidates(profile: runtime.Profile, pending: list[stages.Stage], *,
               base: dict[str, dict[str, Path]]) -> dict[str, dict[str, Path]]:
    """{resource: {destination: source}} in the order to carry them: ``base`` gives "data",
    "wheels" and "fid" (prepare.py finds them); resume points and the finished models that
    pending stages read are found here."""
    from diffnb import transport

    out = {"data": dict(base.get("data", {}))}
    out["data"].update({f".cache/scores/{p.name}": p
                        for p in sorted(runtime.stamps_dir().glob(f"{profile.name}_*"))})
    for path in transport.resume_points(profile):   # with the run's finished members
        out[f"resume:{path.parent.name}"] = {_dest(p, profile): p for p in
                                             [path, *sorted(path.parent.glob("*.half.pt"))]}
    out["wheels"], out["fid"] = dict(base.get("wheels", {})), dict(base.get("fid", {}))
    for name in dict.fromkeys(n for s in pending for n in stages.reads_models(s, profile)):
        preset = config.scaled(config.get_preset(name), profile)
        found = checkpoints.find_final(preset, profile)
        if found is not None:
            dest = checkpoints.run_dir(preset, profile) / checkpoints.final_name(
                preset.train.epochs, half=found.name.endswith(".half.pt"))
            out[f"model:{name}"] = {_dest(dest, profile): found}
    return {k: v for k, v in out.items() if v}


def _dest(path: Path, profile: runtime.Profile) -> str:
    return f"checkpoints/{profile.name}/{path.parent.name}/{path.name}"


def needs(stage: stages.Stage, profile: runtime.Profile, *, have: set[str]) -> tuple[set, set]:
    """(resources, stages that must be done first) of a stage in a session that can carry
    ``have`` (the resources found at all)."""
    res, first = {"data"}, set()
    if stage.kind == "train":
        for name in stage.presets:
            folder = checkpoints.run_dir(config.scaled(config.get_preset(name), profile), profile)
            res |= {f"resume:{folder.name}"} & have
    if stages.needs_fid(stage):
        res |= {"wheels", "fid"}
    for name in stages.reads_models(stage, profile):
        if f"model:{name}" in have:
            res.add(f"model:{name}")
        else:
            first |= {s.name for s in stages.plan(profile) if s.kind == "train"
                      and name in s.presets}
    if stage.kind == "notebooks":
        first |= {s.name for s in stages.plan(profile) if s.kind != "notebooks"}
    return res, first


def simulate(pending, seconds: dict[str, float], *, deadlines: list[int], arrival: dict,
             need: dict, done: set[str], progressed: set[str] = frozenset(),
             whole: float | None = None) -> tuple:
    """The queue's rules, call by call (module docstring; ``stages.session_start``);
    ``progressed``: trainings with a resume point already; ``whole``: a fresh session's queue
    seconds (:func:`fresh_queue_s`). Returns the calls, the resources that a stage which ran
    used, and the seconds left of every stage."""
    left, whole = dict(seconds), fresh_queue_s() if whole is None else whole
    done, used, calls, progressed = set(done), set(), [], set(progressed)
    for k, deadline in enumerate(deadlines, 1):
        call = Call(k, deadline, sum(deadlines[k - 1:]))
        room, ran = float(deadline), False
        for stage in pending:
            session = room + sum(deadlines[k:])            # queue seconds left in the session
            if room <= 0:
                break
            res, first = need[stage.name]
            if stage.name in done or not first <= done or any(arrival.get(r, 99) > k
                                                              for r in res):
                continue
            if stage.kind == "train":
                if session < left[stage.name] <= whole and stage.name not in progressed:
                    continue                       # not started: a fresh session finishes it
                run = min(left[stage.name], room)
                progressed.add(stage.name)
            else:
                if ran and left[stage.name] > room:
                    break                          # stop before: it waits for the next call
                run = left[stage.name]
            left[stage.name] -= run
            room -= run
            used |= res
            call.works_on.append(stage.name)
            if left[stage.name] > 1e-9:
                break                              # the deadline cut a training
            done.add(stage.name)
            call.finishes.append(stage.name)
            ran = True
        calls.append(call)
    return calls, used, left


def fresh_queue_s(device_minutes: float = SESSION_MINUTES) -> int:
    """The most queue seconds a fresh session of ``device_minutes`` gives (2 calls in 15 min):
    a training needing more is started even where a session's end will cut it."""
    return max(sum(deadlines_for(device_minutes * 60, n)) for n in range(1, 9))


def deadlines_for(budget_s: float, calls: int) -> list[int]:
    """The queue seconds of each of ``calls`` calls: the session's time less the start and each
    call's overheads, shared evenly, at most one command each; none when it leaves < 60 s."""
    each = min(CALL_LIMIT_S - COMMAND_S, (budget_s - START_S) / calls - COMMAND_S - GAP_S)
    return [int(each)] * calls if each >= 60 else []


def _more(a: tuple[float, float], b: tuple[float, float]) -> bool:
    """(work finished, work done) ``a`` beats ``b``: more finished, else as much and more done."""
    return a[0] > b[0] + 1e-6 or (abs(a[0] - b[0]) <= 1e-6 and a[1] > b[1] + 1e-6)


def _plan(pending, seconds, found: dict[str, dict[str, int]], need, *, done: set[str],
          budget: float, room: int, progressed: set[str] = frozenset()) -> tuple:
    """Calls, carries and the seconds left per stage after one session. ``found``: {resource:
    {destination: bytes}}. Resources are ordered by the first pending stage that uses them (the
    data first); of every prefix of that order, the one whose calls are expected to finish the
    most work (then do the most) is carried."""
    first = {r: min([i for i, st in enumerate(pending) if r in need[st.name][0]] or [len(pending)])
             for r in found}
    order = sorted(found, key=lambda r: (r != "data", first[r]))
    best = None
    for k in range(1, len(order) + 1):
        chosen = {r: found[r] for r in order[:k]}
        sizes = {d: b for r in chosen.values() for d, b in r.items()}
        where = carry.layout(sizes, budget=room)
        arrival = {r: max(n for d in chosen[r] for n, _ in where[d]) for r in chosen}
        n = max(arrival.values(), default=1)       # one call per carry, and enough to fill
        while n * (CALL_LIMIT_S - COMMAND_S) < budget - START_S - n * (COMMAND_S + GAP_S):
            n += 1
        calls, _, left = simulate(pending, seconds, deadlines=deadlines_for(budget, n),
                                  arrival=arrival, need=need, done=done, progressed=progressed)
        work = (sum(seconds[name] for c in calls for name in c.finishes),
                sum(seconds.values()) - sum(left.values()))
        if best is None or _more(work, best[0]):
            best = (work, calls, chosen, where, left)
    _, calls, chosen, where, left = best
    carried = {}
    for d in (d for r in chosen.values() for d in r):
        for number, b in where[d]:
            carried[number] = carried.get(number, 0) + b
    for call in calls:
        call.carry = f".gpu/carry{call.number}" if call.number in carried else None
        call.carry_bytes = carried.get(call.number, 0)
    return calls, chosen, left


def plan_session(profile: runtime.Profile, state: dict, *, base: dict[str, dict[str, Path]],
                 tree_bytes: int, device_minutes: float = 15.0,
                 skip: frozenset[str] = frozenset()) -> SessionPlan:
    """This session's plan from what is done and found here (``base``: data, wheels, fid);
    ``skip``: stages left out of the GPU's plan (the notebooks, when they run here)."""
    pending = [s for s in stages.plan(profile) if s.name not in state["stages"]
               and s.name not in skip]
    seconds, rate = expected(pending, profile, state=state)
    found = candidates(profile, pending, base=base)
    room = carry.CARRY_LIMIT - tree_bytes - 2 * carry.MIB
    if room < 4 * carry.MIB:
        raise ValueError(f"the tree is {tree_bytes / carry.MIB:.1f} MiB: no room left to carry "
                         "anything (64 MiB per command); see `python -m diffnb.weights check`")
    need = {s.name: needs(s, profile, have=set(found)) for s in pending}
    progressed = {s.name for s in pending if stages.done_fraction(s, profile) > 0}
    calls, chosen, _ = _plan(pending, seconds, {r: {d: Path(p).stat().st_size for d, p in
                                                    v.items()} for r, v in found.items()},
                             need, done=set(state["stages"]), budget=device_minutes * 60,
                             room=room, progressed=progressed)
    files = {d: found[r][d] for r in chosen for d in chosen[r]}
    finished = {name for c in calls for name in c.finishes}
    return SessionPlan(calls, files, seconds, rate,
                       [s.name for s in pending if s.name not in finished])


def forecast(profile: runtime.Profile, state: dict, *, base_bytes: dict[str, int],
             model_bytes: dict[str, int], tree_bytes: int, device_minutes: float = 15.0,
             resume_bytes: dict[str, int] | None = None, most: int = 12,
             skip: frozenset[str] = frozenset()) -> list[list[Call]]:
    """The sessions the rest of the run needs, each planned as above, the models trained in one
    carried into the next (``base_bytes``: data, wheels, fid; ``model_bytes``: kept file per
    preset). A training cut at a session's end goes on in the next one, which carries its
    resume point (``resume_bytes``: per preset, the full checkpoint its run resumes from).
    ``skip``: stages left out, as if done (the notebooks, when they run here afterwards)."""
    done, sessions = set(state["stages"]) | set(skip), []
    room = carry.CARRY_LIMIT - tree_bytes - 2 * carry.MIB
    all_stages = stages.plan(profile)
    left, _ = expected(all_stages, profile, state=state)
    progressed = {s.name for s in all_stages if s.name not in done
                  and stages.done_fraction(s, profile) > 0}
    trained = set()
    while len(sessions) < most:
        pending = [s for s in all_stages if s.name not in done]
        if not pending:
            break
        found = {r: {r: b} for r, b in base_bytes.items()}
        for s in pending:
            if s.name in progressed:
                last = config.scaled(config.get_preset(s.presets[-1]), profile)
                r = f"resume:{checkpoints.run_dir(last, profile).name}"
                found[r] = {r: (resume_bytes or {}).get(last.name, 0)}
        found |= {f"model:{n}": {f"model:{n}": model_bytes[n]} for n in sorted(trained)
                  if any(n in stages.reads_models(s, profile) for s in pending)}
        need = {s.name: needs(s, profile, have=set(found)) for s in pending}
        calls, _, after = _plan(pending, {s.name: left[s.name] for s in pending}, found, need,
                                done=done, budget=device_minutes * 60, room=room,
                                progressed=progressed)
        finished = [n for c in calls for n in c.finishes]
        moved = {n for n, v in after.items() if v < left[n] - 1e-6}
        if not finished and not moved:
            break
        left.update(after)
        progressed |= moved - set(finished)
        done |= set(finished)
        trained |= {p for s in all_stages if s.name in finished and s.kind == "train"
                    for p in s.presets}
        sessions.append(calls)
    return sessions
