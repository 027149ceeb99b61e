"""`stratus consolidate`: the consolidation plan for the live cluster, and approval.

    stratus consolidate plan --dry-run [--policy NAME] [-o table|yaml|json]
    stratus consolidate plan [--policy NAME]       record it as a ConsolidationPlan (waits for approval)
    stratus consolidate approve PLAN

Decisions:

- The plan is computed exactly as the controller computes it (the same reading of the
  cluster, the same translation, the same planner), from the ConsolidationPolicy named
  with ``--policy``, else the active one (the oldest), else the policy defaults.
- ``--dry-run`` only reads: nothing is created, cordoned, migrated or powered.
- Without ``--dry-run`` the plan is recorded unapproved, whatever the policy's mode:
  a plan asked for by hand is looked at before it runs.
"""

from __future__ import annotations

import json
import sys

import click
import yaml


def _policy(name: str | None) -> dict:
    from ..api.consolidationpolicy import ConsolidationPolicySpec
    from ..api.registry import API_VERSION
    from ..drivers import kube
    from ..loops import consolidation_cycle as cycle

    if name:
        body = kube.get(API_VERSION, cycle.POLICIES, name)
        if body is None:
            raise click.ClickException(f"ConsolidationPolicy {name!r} does not exist (kubectl get cpol)")
        return body
    policies = cycle.list_policies()
    active = cycle.active_policy(policies)
    for p in policies:
        if p["metadata"]["name"] == active:
            return p
    defaults = ConsolidationPolicySpec().model_dump(by_alias=True, mode="json")
    return {"metadata": {"name": ""}, "spec": defaults}


@click.group("consolidate")
def consolidate() -> None:
    """Node consolidation: see and approve plans."""


@consolidate.command("plan")
@click.option("--dry-run", is_flag=True, help="Print the plan; change nothing.")
@click.option("--policy", "policy_name", help="The ConsolidationPolicy to plan with (default: the active one).")
@click.option("-o", "--output", type=click.Choice(["table", "yaml", "json"]), default="table", show_default=True)
def plan_cmd(dry_run: bool, policy_name: str | None, output: str) -> None:
    """Plan consolidation for the live cluster."""
    from ..core.consolidation import inputs as ci
    from ..loops import consolidation_cycle as cycle

    policy = _policy(policy_name)
    state, plan = cycle.plan_for(policy.get("spec") or {})
    name = policy["metadata"]["name"] or "(defaults)"
    doc = {"policy": name, **ci.plan_spec(plan, name, approved=False), "cluster": state.summary(), "notes": list(state.notes)}
    doc.pop("approved")
    doc.pop("cancel")
    if output == "json":
        click.echo(json.dumps(doc, indent=2))
    elif output == "yaml":
        click.echo(yaml.safe_dump(doc, sort_keys=False))
    else:
        c = doc["cluster"]
        click.echo(f"policy {name}: {plan.mode.value} ({plan.reason}): {plan.message}")
        click.echo(f"cluster: {c['hosts']} hosts, {c['hostsOn']} on, {c['hostsStandby']} standby; {c['vms']} VMs "
                   f"({c['pendingVms']} pending, {c['pinnedVms']} cannot migrate); utilisation {c['utilisationPercent']}%")
        f = doc["figures"]
        click.echo(f"figures: hosts on {f['hostsOnBefore']} -> {f['hostsOnAfter']} (lower bound {f['lowerBoundHosts']}), "
                   f"{f['migrations']} migrations ({f['migratedMib']} MiB), {f['poweredOff']} off, {f['poweredOn']} on, "
                   f"utilisation {f['utilisationBeforePermille'] / 10:.1f}% -> {f['utilisationAfterPermille'] / 10:.1f}%")
        saved = f["wattsBefore"] - f["wattsAfter"]
        click.echo(f"power: {f['wattsBefore']} W -> {f['wattsAfter']} W estimated"
                   + (f", saving {saved} W ({f['energySavedWhPerDay'] / 1000:.1f} kWh/day)" if saved > 0 else ""))
        if doc["actions"]:
            click.echo(f"{'WAVE':<5} {'ACTION':<9} {'HOST':<30} {'VM':<40} SOURCE")
            for a in doc["actions"]:
                click.echo(f"{a['wave']:<5} {a['type']:<9} {a['host']:<30} {a['vm'] or '-':<40} {a['source'] or '-'}")
        why = {u["vm"]: u["reason"] for u in doc.get("unplacedReasons") or []}
        for vm in doc["unplaced"]:
            click.echo(f"unplaced: {vm}: {why.get(vm, 'fits on no host')}")
        for note in doc["notes"]:
            click.echo(f"note: {note}")
    if dry_run:
        return
    if not policy["metadata"]["name"]:
        raise click.ClickException("no ConsolidationPolicy exists to record the plan under; create one (kubectl apply) "
                                   "or use --dry-run")
    if plan.is_empty:
        click.echo("nothing to record: the plan is empty")
        return
    created = cycle.create_plan(policy, plan, approved=False)
    click.echo(f"recorded ConsolidationPlan {created}; approve it with: stratus consolidate approve {created}")


@consolidate.command("approve")
@click.argument("plan")
def approve_cmd(plan: str) -> None:
    """Approve a Recommended plan (it then runs)."""
    from kubernetes.client.rest import ApiException

    from ..loops import consolidation_cycle as cycle

    try:
        cycle.approve(plan)
    except ApiException as exc:
        raise click.ClickException(f"could not approve {plan}: {exc.status} {exc.reason}") from None
    click.echo(f"approved {plan}")


if __name__ == "__main__":  # pragma: no cover
    consolidate(prog_name="stratus consolidate", args=sys.argv[1:])


#: Registered by stratus.cli.
COMMANDS = (consolidate,)
