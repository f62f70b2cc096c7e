"""``python -m app.train --set NAME=VALUE``: any model parameter from the command line."""

from __future__ import annotations

import pytest

from app.errors import DataError
from app.train import _params, build_parser
from app.train_config import TrainConfig


def params_for(*argv: str, detector: str = "fcvae"):  # type: ignore[no-untyped-def]
    return _params(detector, TrainConfig.from_args(build_parser().parse_args(list(argv))))[0]


def test_set_overrides_any_field_with_json_values() -> None:
    params = params_for(
        "--set", "hidden_dim=200", "--set", "log_transform=false", "--set", "clean_k=null"
    )
    assert params.hidden_dim == 200 and params.log_transform is False
    assert params.clean_k is None
    assert params_for("--set", "latent-dim=4").latent_dim == 4  # dashes read as underscores


def test_set_wins_over_defaults_but_named_options_still_apply() -> None:
    params = params_for("--epochs", "3", "--set", "lr=0.01")
    assert (params.epochs, params.lr) == (3, 0.01)
    assert params_for("--set", "critic_weight=0.5", detector="vaegan").critic_weight == 0.5


@pytest.mark.parametrize(
    ("item", "message"),
    [
        ("nonsense=1", "has no such parameter; it has .*hidden_dim"),
        ("hidden_dim", "expects NAME=VALUE"),
        ("hidden_dim=-5", "(?s)invalid model parameters for fcvae.*hidden_dim"),
        ("sub_window=1000", "(?s)invalid model parameters.*exceeds window"),
    ],
)
def test_bad_overrides_say_what_is_wrong(item: str, message: str) -> None:
    with pytest.raises(DataError, match=message):
        params_for("--set", item)


def test_reference_weeks_option() -> None:
    assert params_for().reference_weeks == 4
    assert params_for("--reference-weeks", "0").reference_weeks == 0
    assert params_for("--tiny").reference_weeks == 0  # tiny models keep short windows


def test_reference_weeks_count_in_steps_of_the_data() -> None:
    from app.pipeline import detector_class

    half_hourly, _ = _params("fcvae", TrainConfig(), step_seconds=1800)
    assert half_hourly.clean_period == 48  # a day of 30-minute steps
    assert detector_class("fcvae")(half_hourly).window == 168 + 4 * 7 * 48


def test_train_config_defaults_are_the_cli_defaults() -> None:
    """One set of defaults: the typed config equals what an empty command line parses to."""
    from app.train_fcvae import build_parser as fcvae_parser  # the same parser, fixed detector

    assert TrainConfig.from_args(build_parser().parse_args([])) == TrainConfig()
    fixed = TrainConfig.from_args(fcvae_parser("x", fixed_detector="fcvae").parse_args([]))
    assert fixed.detector == "fcvae" and fixed.output_dir.name == "fcvae"
    with pytest.raises(ValueError, match="alarm_budget"):
        TrainConfig(alarm_budget=-1)
    with pytest.raises(ValueError, match="unknown_option"):
        TrainConfig.model_validate({"unknown_option": 1})
