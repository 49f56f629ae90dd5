"""W&B's naming limits, checked before a run starts (and by anything that derives names)."""

from __future__ import annotations

import pytest

from gptexp.limits import WANDB_MAX_TAG_LENGTH, check_wandb_name, check_wandb_tags, has_control_characters


def test_tags_of_1_to_64_characters_pass() -> None:
    check_wandb_tags(["a", "x" * WANDB_MAX_TAG_LENGTH, "study:" + "s" * 58])


@pytest.mark.parametrize("tags, message", [
    (["ok", "x" * 65], "tag 1 .* is 65 characters; W&B accepts 1 to 64"),
    ([""], "tag 0 .* is 0 characters"),
    (["study:" + "s" * 59], "is 65 characters"),  # a sweep's study tag: the "study names over 58" failure
    (["two\nlines"], "control character"),
])
def test_tags_w_and_b_rejects_are_refused(tags: list[str], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        check_wandb_tags(tags)


@pytest.mark.parametrize("value, kind, message", [
    ("p" * 129, "project", "project .* is 129 characters; W&B accepts 1 to 128"),
    ("team/proj", "project", "contains /"),
    ("a#b?c", "project", "contains # \\?"),
    ("g" * 129, "group", "is 129 characters"),
    ("n" * 129, "name", "is 129 characters"),
    ("tab\there", "group", "control character"),
    ("", "entity", "is 0 characters"),
])
def test_names_w_and_b_rejects_are_refused(value: str, kind: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        check_wandb_name(value, kind)


def test_names_w_and_b_accepts_pass() -> None:
    check_wandb_name("p" * 128, "project")
    check_wandb_name("study-with/slash ok in a group", "group")
    check_wandb_name("../../../escaped/..", "name")


def test_control_characters() -> None:
    assert has_control_characters("a\nb") and has_control_characters("\x1b[31m") and has_control_characters("a\u2028b")
    assert not has_control_characters("plain text, ünïcode and spaces")
