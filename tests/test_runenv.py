"""The run's environment (runenv.py): what travels from the submitting shell, what never does."""

from __future__ import annotations

import pytest

from dlnest_ray.errors import DlnestError
from dlnest_ray.runenv import captured_env, checked_env, is_denied, parse_env_options

SHELL = {
    "DLNEST_MNIST_DIR": "/data/mnist",
    "WANDB_API_KEY": "secret",
    "PATH": "/usr/bin",
    "HOME": "/home/me",
    "CUDA_VISIBLE_DEVICES": "3",
    "RAY_ADDRESS": "10.0.0.1:6379",
    "DLNEST_RAY_HOME": "/home/me/.dlnest_ray",
    "PWD": "/home/me/proj",
    "SHLVL": "2",
    "TERM": "xterm-256color",
    "TERM_PROGRAM": "tmux",
    "DISPLAY": ":0",
    "TMUX": "/tmp/tmux-0/default,1,0",
    "SSH_AUTH_SOCK": "/tmp/ssh-x/agent",
    "MASTER_PORT": "29500",
    "_": "/usr/bin/dlnest-ray",
}


def test_the_shell_travels_less_the_deny_list() -> None:
    got = captured_env(SHELL)
    assert got == {
        "DLNEST_MNIST_DIR": "/data/mnist",
        "WANDB_API_KEY": "secret",
        "PATH": "/usr/bin",
        "HOME": "/home/me",
    }
    assert all(is_denied(k) for k in SHELL if k not in got)


def test_no_env_keeps_only_the_explicit_values() -> None:
    assert captured_env(SHELL, capture=False, extra={"A": "1"}) == {"A": "1"}
    assert captured_env(SHELL, extra={"TERM": "dumb"})["TERM"] == "dumb"  # asked for: taken
    with pytest.raises(DlnestError, match="dlnest-ray sets CUDA_VISIBLE_DEVICES itself"):
        captured_env(SHELL, extra={"CUDA_VISIBLE_DEVICES": "0"})


@pytest.mark.parametrize("bad", ["NOEQUALS", "=x", "1A=b", "A B=c"])
def test_env_options_are_name_value(bad: str) -> None:
    with pytest.raises(DlnestError, match="NAME=VALUE"):
        parse_env_options([bad])


def test_env_options_keep_equals_in_values() -> None:
    assert parse_env_options(["A=1", "URL=a=b", "EMPTY="]) == {"A": "1", "URL": "a=b", "EMPTY": ""}


def test_the_center_checks_what_it_is_given() -> None:
    assert checked_env(None) == {} and checked_env({"A": "1"}) == {"A": "1"}
    with pytest.raises(DlnestError, match="bad entries"):
        checked_env({"A": 1})
    with pytest.raises(DlnestError, match="RAY_ADDRESS"):
        checked_env({"RAY_ADDRESS": "x"})
    with pytest.raises(DlnestError, match="must map"):
        checked_env(["A=1"])


def test_torch_nccl_async_error_handling_is_set_per_rank_so_refused() -> None:
    # the supervisor sets it in every rank over the run's environment: a given value would be lost
    name = "TORCH_NCCL_ASYNC_ERROR_HANDLING"
    with pytest.raises(DlnestError, match=f"dlnest-ray sets {name} itself"):
        captured_env(SHELL, extra={name: "0"})
    with pytest.raises(DlnestError, match=name):
        checked_env({name: "0"})
    assert is_denied(name)  # a shell that has it set still submits: it is left out, not refused
    assert name not in captured_env({**SHELL, name: "0"})


@pytest.mark.parametrize(
    "name", ["XDG_SESSION_ID", "XDG_SESSION_TYPE", "XDG_SESSION_CLASS", "XDG_SESSION_DESKTOP"]
)
def test_xdg_session_variables_stay_denied(name: str) -> None:
    assert is_denied(name) and name not in captured_env({name: "x", "A": "1"})


@pytest.mark.parametrize(
    "name", ["RANK", "MASTER_ADDR", "RAY_ADDRESS", "DLNEST_RAY_TASK", "TORCH_NCCL_ASYNC_ERROR_HANDLING"]
)
def test_submit_and_center_refuse_the_same_names(name: str) -> None:
    with pytest.raises(DlnestError, match=name):
        captured_env({}, extra={name: "1"})
    with pytest.raises(DlnestError, match=name):
        checked_env({name: "1"})
