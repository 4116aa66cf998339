"""Secrets on a job's workers: shipped once per worker in a plugin, named in tasks by a random id.

A task's function and arguments sit in the scheduler's task graph, which the dashboard and any
connected client can read; a salt there would be a salt published. `Engine.shared(secret)`
ships the secret once per worker inside a Dask worker plugin (`SecretPlugin`, over the cluster's
TLS comms; the scheduler keeps it to hand to workers that join or restart) and gives back a
`SecretRef`: a random id a task may carry and resolve on its worker.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any, Generic, TypeVar, cast

from distributed.diagnostics.plugin import WorkerPlugin

from contracts.errors import ConfigError

__all__ = ["SecretPlugin", "SecretRef", "drop_secret", "hold_secret", "is_held", "new_secret_id"]

S = TypeVar("S")

# This process's shared secrets by id: on a worker, what the plugins installed; in-process, what
# InProcessEngine.shared put here. Only SecretRef.resolve reads a value from it.
_SECRETS: dict[str, object] = {}


def new_secret_id() -> str:
    """Return a fresh random id to name a secret by."""
    return f"bankfusion-secret-{uuid.uuid4().hex}"


def hold_secret(secret_id: str, value: object) -> None:
    """Keep `value` in this process's registry under `secret_id`."""
    _SECRETS[secret_id] = value


def drop_secret(secret_id: str) -> None:
    """Forget the secret named `secret_id` in this process (nothing if it is not held)."""
    _SECRETS.pop(secret_id, None)


def is_held(secret_id: str) -> bool:
    """Return whether this process holds the secret named `secret_id`."""
    return secret_id in _SECRETS


@dataclass(frozen=True, slots=True)
class SecretRef(Generic[S]):
    """Names a secret that `Engine.shared` put on every worker; carries a random id, nothing else.

    A task holds the ref as an argument (task arguments are visible on the dashboard) and calls
    `resolve()` on its worker to get the secret itself.
    """

    secret_id: str

    def resolve(self) -> S:
        """Return the secret on this worker; raise if it was not shared here."""
        try:
            value = _SECRETS[self.secret_id]
        except KeyError:
            raise ConfigError(
                f"secret {self.secret_id} is not on this worker: it was never shared or its "
                "`engine.shared(...)` block has ended; submit the job inside that block",
                setting="secret",
            ) from None
        return cast(S, value)


class SecretPlugin(WorkerPlugin):
    """Installs one secret in a worker's registry when the worker starts; removes it at the end.

    Dask pickles the plugin (the secret inside) and sends it over the cluster's comms, which are
    TLS; the scheduler keeps the pickle so a worker that joins or restarts gets it too. Its repr,
    the only form Dask logs, names the id and hides the value.
    """

    idempotent = False

    def __init__(self, secret_id: str, value: object) -> None:
        self.secret_id = secret_id
        self._value = value

    def setup(self, worker: Any) -> None:
        """Install the secret on `worker`'s process."""
        hold_secret(self.secret_id, self._value)

    def teardown(self, worker: Any) -> None:
        """Remove the secret from `worker`'s process."""
        drop_secret(self.secret_id)

    def __repr__(self) -> str:
        return f"SecretPlugin(secret_id={self.secret_id!r}, value=<hidden>)"
