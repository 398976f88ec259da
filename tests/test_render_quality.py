"""task.render_quality: what each setting renders, its record in the HDF5 file, and how
training follows it or warns about a mismatch (real robosuite environments)."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import h5py
import numpy as np
import pytest
from omegaconf import OmegaConf

from conftest import TINY_TRAIN_ARGS, task_config


@pytest.fixture(scope="module")
def lift_pair():
    """The same Lift task twice, rendered full and fast, at the test size."""
    from envs import make_env

    envs = {q: make_env(task_config("lift_visual", image_size=48, render_quality=q), seed=0) for q in ("full", "fast")}
    yield envs
    for env in envs.values():
        env.close()


def frame(obs) -> np.ndarray:
    return obs["agentview_image"].astype(int)


def test_fast_and_full_frames_show_the_same_scene_slightly_differently(lift_pair):
    full, fast = (lift_pair[q] for q in ("full", "fast"))
    assert (full.render_quality, fast.render_quality) == ("full", "fast")
    same_state = [frame(env.reset(seed=1)[0]) for env in (full, fast)]
    np.testing.assert_array_equal(full.get_state(), fast.get_state())
    difference = np.abs(same_state[0] - same_state[1]).mean()
    # Edges lose their antialiasing and the table its reflections: a little, not nothing.
    assert 0.2 < difference < 5, difference
    up = np.array([0, 0, 1.0, 0, 0, 0, 0])
    for _ in range(8):
        moved, *_ = full.step(up)
    # The arm moving up ~8 cm changes the frame far more than the renderer does.
    assert np.abs(frame(moved) - same_state[0]).mean() > 2 * difference


def test_fast_holds_through_soft_resets_and_a_larger_render(lift_pair):
    fast = lift_pair["fast"]
    before = frame(fast.reset(seed=2)[0])
    context = fast._env.sim._render_context_offscreen
    size = context.con.offWidth + 16  # larger than the offscreen buffer: robosuite rebuilds it
    assert fast.render("agentview", size).shape == (size, size, 3)
    assert context.con.offWidth >= size and context.con.offSamples == 0
    after = frame(fast.reset(seed=2)[0])
    np.testing.assert_array_equal(before, after)
    full_frame = frame(lift_pair["full"].reset(seed=2)[0])
    assert np.abs(after - full_frame).mean() > 0.2, "still the fast frame, not robosuite's default"


def test_settings_resolve_and_bad_values_are_one_line_errors():
    from calql_vision.config import RENDER_QUALITY_SETTINGS
    from envs.render_quality import RENDER_QUALITY_SETTINGS as ENV_SETTINGS
    from envs.render_quality import check_render_quality, resolve_render_quality

    assert RENDER_QUALITY_SETTINGS.choices == ENV_SETTINGS
    assert resolve_render_quality("auto", "full") == "full"
    assert resolve_render_quality("auto") == "fast"
    assert resolve_render_quality("full", "fast") == "full"
    with pytest.raises(ValueError, match="render_quality=best: expected one of full | fast"):
        check_render_quality("best")


def test_bad_setting_on_the_command_line_is_a_clear_error():
    from calql_vision.config import CollectConfig, ConfigError, load_config

    with pytest.raises(ConfigError, match=r"task.render_quality=best: expected one of auto \| full \| fast"):
        load_config(CollectConfig, ["task.render_quality=best"], "calql_vision.collect", "")


# ---------------------------------------------------------------------- the record in the file
@pytest.fixture(scope="module")
def fast_demos(tmp_path_factory) -> Path:
    """One short scripted episode collected with render_quality=auto (collected fast)."""
    from calql_vision.collect import collect_demonstrations

    out = tmp_path_factory.mktemp("fast") / "lift.hdf5"
    stats = collect_demonstrations(task_config("lift_visual", horizon=6, image_size=32), episodes=1, noise=0.0,
                                   out=str(out), show_progress=False)
    assert stats["render_quality"] == "fast"
    return out


def test_collector_records_the_setting_beside_robomimics_keys(fast_demos):
    import robosuite

    from calql_vision.training_data import dataset_render_quality
    from datasets import read_env_args

    env_args = read_env_args(fast_demos)
    assert env_args["render_quality"] == "fast" and dataset_render_quality(fast_demos) == "fast"
    # robomimic passes env_kwargs to robosuite.make, which must accept every key in it.
    assert "render_quality" not in env_args["env_kwargs"]
    kwargs = {**env_args["env_kwargs"], "has_offscreen_renderer": False, "use_camera_obs": False}
    robosuite.make(env_args["env_name"], **kwargs).close()


def with_env_args(source: Path, target: Path, env_args: dict | None) -> Path:
    """A copy of `source` whose env_args is replaced (None: removed)."""
    shutil.copy(source, target)
    with h5py.File(target, "r+") as f:
        del f["data"].attrs["env_args"]
        if env_args is not None:
            f["data"].attrs["env_args"] = json.dumps(env_args)
    return target


def test_a_file_without_the_record_reads_as_full(fast_demos, tmp_path):
    from calql_vision.training_data import dataset_render_quality
    from datasets import DatasetError, read_env_args

    robomimic_style = {k: v for k, v in read_env_args(fast_demos).items() if k != "render_quality"}
    assert dataset_render_quality(with_env_args(fast_demos, tmp_path / "a.hdf5", robomimic_style)) == "full"
    assert dataset_render_quality(with_env_args(fast_demos, tmp_path / "b.hdf5", None)) == "full"
    odd = with_env_args(fast_demos, tmp_path / "c.hdf5", {**robomimic_style, "render_quality": "best"})
    with pytest.raises(DatasetError, match=r"c.hdf5: env_args records render_quality='best'"):
        dataset_render_quality(odd)


def test_default_dataset_names_the_render_quality_unless_full():
    from calql_vision.training_data import default_dataset_path

    assert default_dataset_path(task_config("lift_visual")).name == "lift_visual_scripted_100ep_noise0p3_84px_fast.hdf5"
    full = task_config("lift_visual", render_quality="full")
    assert default_dataset_path(full).name == "lift_visual_scripted_100ep_noise0p3_84px.hdf5"


# ---------------------------------------------------------------------- training follows or warns
@pytest.fixture()
def full_record_demos(fast_demos, tmp_path) -> Path:
    """The demos, recorded as rendered full (as every file from before the setting)."""
    from datasets import read_env_args

    return with_env_args(fast_demos, tmp_path / "full.hdf5", {**read_env_args(fast_demos), "render_quality": "full"})


def test_auto_follows_the_dataset_into_the_runs_config(full_record_demos, tmp_path):
    from calql_vision.launch import build

    launch = build([*TINY_TRAIN_ARGS, "task.image_size=32", f"dataset={full_record_demos}", f"runs_root={tmp_path}"])
    try:
        assert launch.cfg.task.render_quality == "full"
        assert OmegaConf.load(launch.run.config).task.render_quality == "full", "evaluate renders as trained"
    finally:
        launch.abandon()


def test_an_explicit_mismatch_is_an_error_unless_allowed_then_a_warning(full_record_demos, tmp_path, capsys):
    from calql_vision.config import ConfigError
    from calql_vision.launch import build
    from calql_vision.train import Trainer

    args = [*TINY_TRAIN_ARGS, "task.image_size=32", f"dataset={full_record_demos}", f"runs_root={tmp_path}",
            "task.render_quality=fast"]
    with pytest.raises(ConfigError) as error:
        build(args)
    assert str(error.value).startswith(f"dataset={full_record_demos} was rendered with render_quality=full "
                                       "(4x multisampling, reflections) but task.render_quality=fast")
    assert "allow_render_mismatch=true" in str(error.value) and "\n" not in str(error.value)
    assert not (tmp_path / "lift_visual").exists(), "no run directory for a run that never began"

    launch = build([*args, "allow_render_mismatch=true"])
    try:
        trainer = Trainer(launch.cfg, launch.run)
        trainer.envs.close()
    finally:
        launch.abandon()
    warnings = [line for line in capsys.readouterr().err.splitlines() if line.startswith("warning:")]
    assert len(warnings) == 1
    assert (f"{full_record_demos} was rendered with render_quality=full (4x multisampling, reflections) "
            "but task.render_quality=fast") in warnings[0]


def test_runs_from_before_the_setting_render_full(tmp_path):
    from calql_vision.config import TrainConfig, load_run_config

    saved = OmegaConf.to_container(OmegaConf.structured(TrainConfig))
    del saved["task"]["render_quality"]
    (tmp_path / "config.yaml").write_text(OmegaConf.to_yaml(saved))
    assert load_run_config(tmp_path).task.render_quality == "full"
