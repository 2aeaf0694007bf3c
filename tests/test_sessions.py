"""The GPU session planner (diffnb.sessions): calls inside the device tool's limits, carries in
order of need, no training started that would be lost at the session's end. Estimates only."""
import pytest

from diffnb import carry, checkpoints, config, runtime, sessions, stages

FULL = runtime.PROFILES["full"]
MIB = carry.MIB
TREE = int(4.5 * MIB)
ROOM = carry.CARRY_LIMIT - TREE - 2 * MIB


def _file(path, n):
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as f:
        f.truncate(n)                                        # sparse: sizes without the bytes
    return path


@pytest.fixture
def here(tmp_path, monkeypatch):
    monkeypatch.setenv("DIFFNB_OUTPUTS", str(tmp_path))
    monkeypatch.setenv("DIFFNB_CHECKPOINTS", str(tmp_path / "checkpoints"))
    sizes = {"data": {".gpu/data/train.gz": 26_421_880, ".gpu/data/test.gz": 4_422_102},
             "wheels": {".gpu/wheels/a.whl": 17_464_319},
             "fid": {".cache/fid/inception.pt": 95_700_000}}
    return {r: {d: _file(tmp_path / "src" / d, n) for d, n in v.items()}
            for r, v in sizes.items()}


def _limits_hold(plan, *, longer=()):
    """The device tool's limits hold, and no training is cut at the session's end but one that
    no session could finish (``longer``: its resume point is committed, weights.keep)."""
    assert sessions.START_S + sum(c.deadline_s + sessions.COMMAND_S + sessions.GAP_S
                                  for c in plan.calls) <= 15 * 60
    for k, c in enumerate(plan.calls):
        assert c.session_left_s == sum(d.deadline_s for d in plan.calls[k:])
        assert c.deadline_s + sessions.COMMAND_S <= sessions.CALL_LIMIT_S
        assert c.carry_bytes <= ROOM
    started = {s for c in plan.calls for s in c.works_on if s.startswith("train:")}
    assert started - {s for c in plan.calls for s in c.finishes} <= set(longer)


def test_a_first_session_trains_from_its_first_call_and_carries_only_the_data(here):
    plan = sessions.plan_session(FULL, {"stages": {}}, base=here, tree_bytes=TREE)
    _limits_hold(plan)
    assert list(plan.files)[:2] == [".gpu/data/train.gz", ".gpu/data/test.gz"]
    assert plan.calls[0].carry == ".gpu/carry1"
    assert plan.calls[0].works_on[0] == "train:class_2+class_4"
    assert not any(d.startswith((".cache/fid", ".gpu/wheels")) for d in plan.files)
    assert "nothing measured yet" in plan.rate and plan.left_after


def test_measured_seconds_calibrate_the_plan(here):
    cuda = runtime.torch.device("cuda")
    stage = stages.Stage("train:class_2+class_4", "train", ("class_2", "class_4"))
    prior = stages.prior_seconds(stage, FULL, device=cuda)
    state = {"stages": {stage.name: {"seconds": 10.0, "device": "NVIDIA H200", "kind": "train",
                                     "prior_seconds": prior,
                                     "info": {"train_seconds": 2 * prior}}}}
    fresh = sessions.plan_session(FULL, {"stages": {}}, base=here, tree_bytes=TREE)
    slow = sessions.plan_session(FULL, state, base=here, tree_bytes=TREE)
    assert "calibrated on NVIDIA H200: x2.00 (training)" in slow.rate
    assert slow.expected["train:base_1"] == pytest.approx(2 * fresh.expected["train:base_1"])
    _limits_hold(slow)


def test_a_scoring_session_carries_the_fid_weights_and_the_models_it_reads(here):
    trained = [s for s in stages.plan(FULL) if s.kind == "train"]
    state = {"stages": {s.name: {"seconds": 1.0, "device": "cpu", "kind": "train"}
                        for s in trained}}
    for name in stages.trained_presets(FULL):              # compact weights unpacked here
        p = config.scaled(config.get_preset(name), FULL)
        _file(checkpoints.run_dir(p, FULL) / checkpoints.final_name(p.train.epochs, half=True),
              5 * MIB)
    plan = sessions.plan_session(FULL, state, base=here, tree_bytes=TREE)
    _limits_hold(plan)
    order = list(plan.files)
    assert order[0].startswith(".gpu/data/") and ".cache/fid/inception.pt" in order
    layout = carry.layout({d: p.stat().st_size for d, p in plan.files.items()}, budget=ROOM)
    fid_arrives = layout[".cache/fid/inception.pt"][-1][0]
    scored = [(c.number, s) for c in plan.calls for s in c.finishes if s.startswith("fid:")]
    assert scored and all(n >= fid_arrives for n, _ in scored)
    for number, s in scored:                                # its model travelled before it
        p = config.scaled(config.get_preset(s.split(":")[1]), FULL)
        dest = (f"checkpoints/full/{checkpoints.run_dir(p, FULL).name}/"
                f"{checkpoints.final_name(p.train.epochs, half=True)}")
        assert layout[dest][-1][0] <= number


def test_the_forecast_finishes_the_run_within_the_limits(here):
    sizes = {r: sum(p.stat().st_size for p in v.values()) for r, v in here.items()}
    plan = sessions.forecast(FULL, {"stages": {}}, base_bytes=sizes,
                             model_bytes={n: 5 * MIB for n in stages.trained_presets(FULL)},
                             tree_bytes=TREE)
    done = [s for calls in plan for c in calls for s in c.finishes]
    assert sorted(done) == sorted(s.name for s in stages.plan(FULL))
    assert len(done) == len(set(done)) and 2 <= len(plan) <= 6
    for calls in plan:
        _limits_hold(sessions.SessionPlan(calls, {}, {}, "", []))


def test_a_training_longer_than_a_session_spans_two_and_the_second_carries_its_resume_point(
        here, monkeypatch):
    """On a GPU slower than assumed, class_2+class_4 needs more than a session's queue: it is
    started anyway and goes on in the next session, whose first call carries its resume point,
    instead of never being planned."""
    monkeypatch.setitem(stages.ASSUMED_TFLOPS, "cuda", {"bf16": 100.0, "fp32": 40.0})
    big = "train:class_2+class_4"
    seconds, _ = sessions.expected(stages.plan(FULL), FULL, state={"stages": {}})
    assert seconds[big] > 600                                  # more than a session's queue
    sizes = {r: sum(p.stat().st_size for p in v.values()) for r, v in here.items()}
    plan = sessions.forecast(FULL, {"stages": {}}, base_bytes=sizes,
                             model_bytes={n: 5 * MIB for n in stages.trained_presets(FULL)},
                             resume_bytes={n: 30 * MIB for n in stages.trained_presets(FULL)},
                             tree_bytes=TREE)
    done = [s for calls in plan for c in calls for s in c.finishes]
    assert sorted(done) == sorted(s.name for s in stages.plan(FULL))
    assert plan[0][0].works_on[0] == big                       # started in the first session
    ends = [k for k, calls in enumerate(plan) for c in calls if big in c.finishes]
    assert ends and ends[0] > 0                                # ... and finished in a later one
    carried = sum(c.carry_bytes for c in plan[ends[0]])
    assert carried >= sizes["data"] + 30 * MIB                 # with its resume point
    for k, calls in enumerate(plan):
        _limits_hold(sessions.SessionPlan(calls, {}, {}, "", []), longer=[big] * (k < ends[0]))


def test_notebooks_left_to_the_cpu_are_not_planned_and_need_no_more_sessions(here):
    sizes = {r: sum(p.stat().st_size for p in v.values()) for r, v in here.items()}
    kwargs = dict(base_bytes=sizes, tree_bytes=TREE,
                  model_bytes={n: 5 * MIB for n in stages.trained_presets(FULL)})
    every = sessions.forecast(FULL, {"stages": {}}, **kwargs)
    here_ = sessions.forecast(FULL, {"stages": {}}, skip=frozenset({"notebooks"}), **kwargs)
    done = [s for calls in here_ for c in calls for s in c.finishes]
    assert sorted(done) == sorted(s.name for s in stages.plan(FULL) if s.name != "notebooks")
    assert len(here_) <= len(every)
    plan = sessions.plan_session(FULL, {"stages": {s: {} for s in done}}, base=here,
                                 tree_bytes=TREE, skip=frozenset({"notebooks"}))
    assert plan.calls == [] or not any(c.works_on for c in plan.calls)
