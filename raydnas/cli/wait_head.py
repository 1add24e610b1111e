"""``raydnas wait-head ADDRESS``: wait until a Ray cluster's job API can take a job.

``ray up`` returns once ``ray start`` has run on the head, but the head's job API is not ready
then: ``ray job submit`` answers ``500: No available agent to submit job, please try again
later`` until the head's dashboard agent has started its HTTP server and registered itself. On a
loaded machine that can be tens of seconds after ``ray up`` has returned; if the agent's HTTP port
(52365 by default) is held by another Ray on the same machine, that answer never changes.

What decides it, in Ray 2.60 (``ray/dashboard/modules/job/job_head.py``): ``JobHead.submit_job``
asks ``get_target_agent()`` for the head node's agent and gives up after
``WAIT_AVAILABLE_AGENT_TIMEOUT`` (10 s) with that 500. The agent counts as available once two
keys are in the GCS's internal KV: the head node's id (``KV_HEAD_NODE_ID_KEY``, written by the
dashboard's node module when it sees the head node) and
``DASHBOARD_AGENT_ADDR_NODE_ID_PREFIX<node id>`` (written by ``ray/dashboard/agent.py`` only
once the agent's HTTP server has started; an agent that cannot bind its port stays up without it
and never writes the key).

The check is a submit that goes through exactly that path but starts nothing: the probe asks
for an ``entrypoint_label_selector`` whose key is not a valid label. The head selects the
agent and forwards the request like any submit (so "No available agent" comes back while no
agent is registered); the agent connects to Ray, waits for its job manager to finish recovering
jobs, and then rejects the selector before it writes any job record or starts a supervisor
actor. An answer that quotes the probe's label key therefore means the next ``ray job submit``
reaches a working agent (and the head has cached that agent). The head logs that rejection once
("Failed to submit job due to unexpected exception") in its ``dashboard_*.log``: harmless.
Should another Ray version accept the probe as a job (its entrypoint is ``true``), that too
proves the API takes jobs. Where the client or the head predates ``entrypoint_label_selector``
(older Rays), only a real submit proves it: a job ``true`` is submitted instead and waited
for; it stays in ``ray job list`` as ``raydnas-wait-head-…-true`` (not deleted: see
``_finish_probe_job``). The label probe leaves nothing there.

The client is Ray's own ``JobSubmissionClient``, the one ``ray job submit`` uses, so the token
is sent exactly as the submit that follows will send it: with ``RAY_AUTH_MODE=token`` set, from
``RAY_AUTH_TOKEN``, ``RAY_AUTH_TOKEN_PATH`` or ``~/.ray/auth_token``. A refused token (HTTP 401
or 403) is not a matter of waiting: it fails at once with one line saying what to set.

Ray is imported inside the functions, not at the top of this module: the ``raydnas`` command
builds every subcommand's parser, and ``raydnas --help`` (or any other subcommand) must not pay
for importing Ray and its dashboard client.
"""

from __future__ import annotations

import argparse
import inspect
import re
import sys
import threading
import time
import uuid
from typing import Callable

# Lazy imports: Ray loads when the command runs, not for `--help`.

# Not a valid Ray label key (a space), so the agent rejects the probe before it creates a job.
PROBE_LABEL = "raydnas wait-head probe"


class HeadNotReady(TimeoutError):
    """The job API at an address did not accept a job in time (one-line message)."""


class HeadAuthError(RuntimeError):
    """The head refused this client's token (one-line message); waiting would not help."""


def _one_line(text: str, limit: int = 200) -> str:
    """The most telling line of an answer (a traceback's last line), shortened to ``limit``."""
    lines = [x.strip() for x in str(text).splitlines() if x.strip()]
    line = lines[-1] if lines else ""
    line = line.rstrip(".") + ("." if line else "")
    return line if len(line) <= limit else line[: limit - 3] + "..."


def _describe(exc: BaseException) -> str:
    """One line for a failed probe: what the address answered, or that nothing did."""
    text = str(exc)
    m = re.match(r"Request failed with status code (\d+): (.*)", text, re.S)
    if m:
        return f"HTTP {m.group(1)}: {_one_line(m.group(2).rstrip().rstrip('.'))}"
    if isinstance(exc, ConnectionError) and text.startswith("Failed to connect to Ray"):
        return "nothing answered (connection failed)"
    return f"{type(exc).__name__}: {_one_line(text)}"


def _finish_probe_job(client, sid: str, limit_s: float = 60) -> str | None:
    """Wait for a probe job (``true``) to end; its final status, or None (then it is stopped).

    The job is not deleted: deleting right after it ended races Ray's job monitor, which then
    writes the job back as FAILED ("Entrypoint not found."). A finished ``true`` is harmless.
    """
    try:
        end = time.monotonic() + limit_s
        while time.monotonic() < end:
            status = client.get_job_status(sid)
            if status.is_terminal():
                return str(status.value)
            time.sleep(0.5)
        client.stop_job(sid)
    except Exception:  # noqa: BLE001 - the probe job is ours; a leftover one is harmless
        pass
    return None


def _auth_error(address: str, exc: BaseException) -> HeadAuthError:
    code = "401" if str(exc).startswith("Authentication required") else "403"
    what = ("requires a token: export RAY_AUTH_MODE=token (the token is read from "
            "RAY_AUTH_TOKEN or ~/.ray/auth_token)" if code == "401" else
            "refused the token: make RAY_AUTH_TOKEN or ~/.ray/auth_token the cluster's "
            "(the file that `ray up` copied to the head)")
    return HeadAuthError(f"{address}: the head {what} (HTTP {code})")


def probe(address: str, how: str = "label") -> tuple[bool, str]:
    """One check: ``(True, answer)`` when the job API at ``address`` can take a job now.

    ``how="label"``: the submit that the agent rejects (starts nothing; see the module
    docstring). ``how="job"``, or where client or head predate ``entrypoint_label_selector``
    (older Rays): a real job ``true``, submitted and waited for. Raises
    :class:`HeadAuthError` when the head refuses the token.
    """

    from ray.job_submission import JobSubmissionClient

    try:
        from ray.exceptions import AuthenticationError as auth_errors
    except ImportError:  # a Ray without token authentication
        auth_errors = ()

    sid = f"raydnas-wait-head-{uuid.uuid4().hex[:12]}"
    try:
        client = JobSubmissionClient(address)  # GET /api/version: reachable, token, version
        if how == "label" and "entrypoint_label_selector" in inspect.signature(
                client.submit_job).parameters:
            try:
                client.submit_job(entrypoint="true", submission_id=sid,
                                  entrypoint_label_selector={PROBE_LABEL: ""})
            except auth_errors:
                raise
            except Exception as e:  # noqa: BLE001 - every other answer is "not ready yet"
                if PROBE_LABEL in str(e):  # the agent itself answered: it checked the request
                    return True, "the job agent answered"
                if "entrypoint_label_selector" not in str(e):
                    return False, _describe(e)
                # a head older than this client: no label selectors, so a real job proves it
            else:  # a Ray that checks the selector later took the probe as a job
                _finish_probe_job(client, sid)
                return True, "the job agent accepted a probe job"
        client.submit_job(entrypoint="true", submission_id=f"{sid}-true")
    except auth_errors as e:
        raise _auth_error(address, e) from None
    except Exception as e:  # noqa: BLE001 - every other answer is "not ready yet"
        return False, _describe(e)
    status = _finish_probe_job(client, f"{sid}-true")
    return True, f"the job agent ran a probe job `true`: {status or 'still running'}"


def _hint(last: str) -> str:
    if last.startswith("nothing answered"):
        return ("nothing listens there: is the head up (`ray up` finished) and, for a forwarded "
                "port, `ray dashboard CLUSTER.yaml --port PORT &` still running?")
    if "No available agent" in last:
        return ("the head's dashboard answers but its job agent never registered: see "
                "dashboard_agent.log on the head (`ray exec CLUSTER.yaml 'tail -50 "
                "/tmp/ray/session_latest/logs/dashboard_agent.log'`); \"Failed to bind to port\" "
                "there means another Ray on the head holds the agent's port (52365 unless `ray "
                "start --dashboard-agent-listen-port` sets another)")
    return "check the head (`ray exec CLUSTER.yaml 'ray status'`)"


def wait_for_job_agent(address: str, timeout_s: float = 180, poll_s: float = 2,
                       log: Callable[[str], object] | None = print) -> float:
    """Poll ``address`` (a Ray dashboard URL) until its job API can take a job.

    Returns the seconds waited. Raises :class:`HeadNotReady` after ``timeout_s`` (one line: the
    address, the time waited, the last answer and what to do) and :class:`HeadAuthError` at once
    when the head refuses the token. ``log`` gets a line when the answer changes (None: quiet).
    """
    t0 = time.monotonic()
    deadline = t0 + timeout_s
    last, said = "no answer yet", None
    while True:
        result: list = []

        def run() -> None:
            try:
                result.append(probe(address))
            except BaseException as e:  # noqa: BLE001 - handed to the waiting thread
                result.append(e)

        # a request that never returns (a port forward that accepts and then hangs) must not
        # outlive the deadline: the probe runs in a daemon thread that is abandoned then
        worker = threading.Thread(target=run, name="raydnas-wait-head", daemon=True)
        worker.start()
        worker.join(max(0.0, deadline - time.monotonic()) + 0.5)
        if not result:  # keep the answer before it: it says more than a pending request
            if last == "no answer yet":
                last = "no answer (the request was still pending at the deadline)"
        elif isinstance(result[0], BaseException):
            raise result[0]
        else:
            ready, last = result[0]
            waited = time.monotonic() - t0
            if ready:
                if log:
                    log(f"wait-head: {address}: ready for jobs after {waited:.1f} s ({last})")
                return waited
            if log and last != said:
                log(f"wait-head: {address}: not ready after {waited:.1f} s: {last}; retrying")
                said = last
        waited = time.monotonic() - t0
        if time.monotonic() >= deadline:
            raise HeadNotReady(
                f"{address}: the Ray job API could not take a job after {waited:.0f} s (last "
                f"answer: {last}); {_hint(last)}; then wait longer: raydnas wait-head {address} "
                f"--timeout {max(2 * timeout_s, 60):g}".replace("\n", " "))
        time.sleep(max(0.0, min(poll_s, deadline - time.monotonic())))  # last probe at the end


# -- command line ------------------------------------------------------------------------------
DESCRIPTION = ("Wait until a Ray cluster's job API can take a job: run it between `ray up` (and "
               "`ray dashboard CLUSTER.yaml --port 8266 &`) and `ray job submit`. It sends the "
               "token as `ray job submit` does (RAY_AUTH_MODE=token). Exit status 0 when ready, "
               "1 with one line when not ready in time or when the token is refused.")


def _configure(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
    p.add_argument("address", help="the job API, as for `ray job submit --address` "
                                   "(e.g. http://127.0.0.1:8266)")
    p.add_argument("--timeout", type=float, default=180.0, metavar="S",
                   help="give up after S seconds (default 180)")
    p.set_defaults(func=_cmd)
    return p


def _cmd(args: argparse.Namespace) -> int:
    try:
        wait_for_job_agent(args.address, timeout_s=args.timeout)
    except (HeadNotReady, HeadAuthError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    except ImportError as e:
        print(f"error: raydnas wait-head needs Ray's job client (pip install 'ray[default]'): "
              f"{e}", file=sys.stderr)
        return 1
    return 0


def add_parser(subparsers) -> argparse.ArgumentParser:
    """The ``raydnas wait-head`` subcommand (for :func:`raydnas.cli.main.build_parser`)."""
    return _configure(subparsers.add_parser(
        "wait-head", help="wait until a cluster's job API can take a job (after `ray up`)",
        description=DESCRIPTION))


def main(argv: list[str] | None = None) -> int:
    """``python -m raydnas.cli.wait_head ADDRESS [--timeout S]``: exit status 0 or 1."""
    args = _configure(argparse.ArgumentParser(prog="raydnas wait-head",
                                              description=DESCRIPTION)).parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
