"""The stage pods' identity: a ServiceAccount bound to no role, without a token."""
from __future__ import annotations

from stepshot.manifests.context import Context


def trainer_service_account(ctx: Context) -> dict | None:
    """The stage pods' ServiceAccount in the resource's namespace: bound to no role, no token.

    The chart creates it in the namespaces it knows; the operator ensures it wherever a
    resource appears (rbac.mode=cluster watches namespaces the chart never saw). It is shared
    by every resource of the namespace, so it is not owned by (and not deleted with) one."""
    name = ctx.caps.trainer_service_account
    if not name:
        return None
    return {"apiVersion": "v1", "kind": "ServiceAccount",
            "metadata": {"name": name, "namespace": ctx.namespace,
                         "labels": {"app.kubernetes.io/name": "stepshot",
                                    "app.kubernetes.io/managed-by": "stepshot-operator",
                                    "app.kubernetes.io/component": "trainer"}},
            "automountServiceAccountToken": False,
            **({"imagePullSecrets": [{"name": n} for n in ctx.caps.trainer_pull_secrets]}
               if ctx.caps.trainer_pull_secrets else {})}
