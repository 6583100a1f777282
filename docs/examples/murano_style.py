"""A Murano-style deployment pipeline on polymsg: the worked example of
"Migrating from a hand-written broker wrapper".

Three components, several instances of each:

* **api** accepts deployments and casts each one as a task to the engines;
  its instances share the progress notifications (one pool), and a
  dashboard gets its own copy of them (another pool);
* **engine** (the conductor) takes each task on one instance, sends the
  execution plan to the deployment's agent, turns the agent's result into a
  "finished" notification;
* **agent** runs inside a virtual machine that boots *after* its plan was
  sent (store and forward: the plan waits in the agent's queue), executes it
  and casts the result back to the engines. An agent's queue expires when no
  agent has consumed it for ``agent_queue_ttl`` seconds (its VM was deleted),
  taking the plans waiting in it along.

Run it on any transport that stores and forwards and honours queue_ttl::

    python docs/examples/murano_style.py memory://
    python docs/examples/murano_style.py rabbit://guest:guest@localhost:5672/
"""

from __future__ import annotations

import queue
import sys
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

import polymsg

ENGINE_TOPIC = "murano-engine"
AGENT_TOPIC = "murano-agent"
PROGRESS_TOPIC = "murano-progress"
PLAN_SENT = "murano.deployment.plan_sent"
FINISHED = "murano.deployment.finished"


class EngineEndpoint:
    """What every engine instance serves on ``murano-engine``."""

    def __init__(self, name: str, transport: polymsg.Transport, agent_queue_ttl: float) -> None:
        self.name = name
        self.progress = polymsg.Notifier(transport, f"murano-engine.{name}",
                                         topics=(PROGRESS_TOPIC,))
        # Plans go to one agent's queue (server=agent id); the queue outlives
        # an agent that has not booted yet, but not a VM that is gone for good.
        self.agents = polymsg.RPCClient(transport, polymsg.Target(topic=AGENT_TOPIC),
                                        queue_ttl=agent_queue_ttl)

    def handle_task(self, ctxt: dict[str, Any], deployment: str, agent: str,
                    plan: dict[str, Any]) -> None:
        """A deployment task from the api: forward its plan to the agent."""
        self.agents.prepare(server=agent).cast(ctxt, "execute_plan", deployment=deployment,
                                                plan=plan)
        self.progress.info(ctxt, PLAN_SENT,
                           {"deployment": deployment, "agent": agent, "engine": self.name})

    def process_result(self, ctxt: dict[str, Any], deployment: str, agent: str,
                       result: dict[str, Any]) -> None:
        """An agent's result: report the deployment finished (or failed)."""
        payload = {"deployment": deployment, "agent": agent, "engine": self.name, **result}
        if result["ok"]:
            self.progress.info(ctxt, FINISHED, payload)
        else:
            self.progress.error(ctxt, "murano.deployment.failed", payload)


class AgentEndpoint:
    """What the agent in one VM serves on ``murano-agent.<agent id>``."""

    def __init__(self, agent: str, transport: polymsg.Transport,
                 executed: queue.Queue[tuple[str, str]]) -> None:
        self.agent = agent
        self.engines = polymsg.RPCClient(transport, polymsg.Target(topic=ENGINE_TOPIC))
        self.executed = executed

    def execute_plan(self, ctxt: dict[str, Any], deployment: str, plan: dict[str, Any]) -> None:
        """Run the plan's steps and cast the outcome back to any engine."""
        self.executed.put((self.agent, deployment))
        outputs = [f"{step}: done" for step in plan["steps"]]
        self.engines.cast(ctxt, "process_result", deployment=deployment, agent=self.agent,
                          result={"ok": True, "outputs": outputs})


class ProgressEndpoint:
    """Follows deployments; api instances share one pool, the dashboard has its own."""

    def __init__(self, name: str, seen: queue.Queue[tuple[str, str, dict[str, Any]]]) -> None:
        self.name = name
        self.seen = seen

    def info(self, ctxt: dict[str, Any], publisher_id: str, event_type: str,
             payload: dict[str, Any], metadata: dict[str, Any]) -> None:
        self.seen.put((self.name, event_type, payload))

    error = info


@dataclass
class Report:
    """What happened, for the narration and for the test that runs this file."""

    tasks_by_engine: dict[str, list[str]] = field(default_factory=dict)
    executed: list[tuple[str, str]] = field(default_factory=list)
    finished: dict[str, dict[str, Any]] = field(default_factory=dict)
    progress_by_api: dict[str, int] = field(default_factory=dict)
    dashboard_events: int = 0


class Deployment:
    """The whole system on one transport: two engines, two api instances, a
    dashboard and agents that start late."""

    def __init__(self, transport: polymsg.Transport, agent_queue_ttl: float,
                 wait: float) -> None:
        self.transport = transport
        self.agent_queue_ttl = agent_queue_ttl
        self.wait = wait
        self.progress: queue.Queue[tuple[str, str, dict[str, Any]]] = queue.Queue()
        self.executed: queue.Queue[tuple[str, str]] = queue.Queue()
        self.running: list[polymsg.RPCServer | polymsg.NotificationListener] = []
        self.report = Report()
        self.api = polymsg.RPCClient(transport, polymsg.Target(topic=ENGINE_TOPIC))

    def start(self, runner: polymsg.RPCServer | polymsg.NotificationListener) -> None:
        runner.start()
        self.running.append(runner)

    def start_engines_and_apis(self) -> None:
        for name in ("engine-1", "engine-2"):
            endpoint = EngineEndpoint(name, self.transport, self.agent_queue_ttl)
            self.start(polymsg.get_rpc_server(
                self.transport, polymsg.Target(topic=ENGINE_TOPIC, server=name), [endpoint]))
        for name, pool in (("api-1", "murano-api"), ("api-2", "murano-api"),
                           ("dashboard", "murano-dashboard")):
            self.start(polymsg.get_notification_listener(
                self.transport, [polymsg.Target(topic=PROGRESS_TOPIC)],
                [ProgressEndpoint(name, self.progress)], pool=pool))

    def start_agent(self, agent: str) -> None:
        endpoint = AgentEndpoint(agent, self.transport, self.executed)
        self.start(polymsg.get_rpc_server(
            self.transport, polymsg.Target(topic=AGENT_TOPIC, server=agent), [endpoint],
            queue_ttl=self.agent_queue_ttl))

    def deploy(self, deployment: str, agent: str) -> None:
        """What the api does for ``POST /deployments``: one cast to the engines."""
        ctxt = {"request_id": f"req-{uuid.uuid4().hex[:8]}", "tenant": "demo"}
        plan = {"steps": ["install packages", "configure", "start service"]}
        self.api.cast(ctxt, "handle_task", deployment=deployment, agent=agent, plan=plan)

    def await_progress(self, events: set[tuple[str, str]]) -> None:
        """Wait until the api pool and the dashboard have both seen every
        ``(event_type, deployment)`` in ``events``.

        Listeners run their endpoints on worker threads, so two events
        may arrive out of order: wait for each one by name, not only for
        the last one sent."""
        missing = {(who, *event) for who in ("api", "dashboard") for event in events}
        while missing:
            try:
                name, seen_type, payload = self.progress.get(timeout=self.wait)
            except queue.Empty:
                raise TimeoutError(f"still waiting for {sorted(missing)}") from None
            self.note(name, seen_type, payload)
            who = "dashboard" if name == "dashboard" else "api"
            missing.discard((who, seen_type, payload["deployment"]))

    def note(self, name: str, event_type: str, payload: dict[str, Any]) -> None:
        report = self.report
        if name == "dashboard":
            report.dashboard_events += 1
            return
        report.progress_by_api[name] = report.progress_by_api.get(name, 0) + 1
        if event_type == PLAN_SENT:
            report.tasks_by_engine.setdefault(payload["engine"], []).append(
                payload["deployment"])
        elif event_type == FINISHED:
            report.finished[payload["deployment"]] = payload

    def stop(self) -> None:
        for runner in self.running:
            runner.stop()
        for runner in self.running:
            runner.wait()
        while not self.executed.empty():
            self.report.executed.append(self.executed.get())


def run(url: str, *, agent_queue_ttl: float = 2.0, wait: float = 10.0) -> Report:
    """The scenario, start to end; returns what each component saw."""
    with polymsg.get_transport(url) as transport:
        system = Deployment(transport, agent_queue_ttl, wait)
        try:
            system.start_engines_and_apis()
            # Four deployments; no VM has booted yet, so the plans wait in
            # the agents' queues.
            for n in range(1, 5):
                system.deploy(f"dep-{n}", f"agent-{n}")
            system.await_progress({(PLAN_SENT, f"dep-{n}") for n in range(1, 5)})
            # Three VMs boot: their agents find their plans waiting.
            for n in range(1, 4):
                system.start_agent(f"agent-{n}")
            system.await_progress({(FINISHED, f"dep-{n}") for n in range(1, 4)})
            # agent-4's VM was deleted before it booted. After agent_queue_ttl
            # seconds without a consumer its queue is gone, plan included.
            # (A TTL is a span of time: nothing signals its end, so wait.)
            time.sleep(agent_queue_ttl * 1.5 + 1.0)
            # A new VM takes the name agent-4 and gets a new deployment: it
            # runs dep-5 only; the expired dep-4 never executes.
            system.start_agent("agent-4")
            system.deploy("dep-5", "agent-4")
            system.await_progress({(PLAN_SENT, "dep-5"), (FINISHED, "dep-5")})
        finally:
            system.stop()
        return system.report


def main(argv: list[str]) -> None:
    """``python murano_style.py [URL]``: run the scenario and print what happened."""
    report = run(argv[1] if len(argv) > 1 else "memory://murano")
    for engine, deployments in sorted(report.tasks_by_engine.items()):
        print(f"{engine} handled {', '.join(sorted(deployments))}")
    for agent, deployment in report.executed:
        print(f"{agent} executed {deployment}")
    print(f"finished: {', '.join(sorted(report.finished))}")
    print(f"progress events per api instance: {report.progress_by_api}; "
          f"dashboard saw {report.dashboard_events}")


if __name__ == "__main__":
    main(sys.argv)
