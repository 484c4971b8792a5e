"""The shared API-server fixture gives RBAC-checked identities (used by the chart tests too)."""
import pytest
from kubernetes import client

pytestmark = pytest.mark.apiserver


def test_token_users_and_service_accounts_are_subject_to_rbac(apiserver):
    ns = apiserver.create_namespace("rbac-fixture")
    with pytest.raises(client.ApiException) as exc:
        client.CoreV1Api(apiserver.client("alice")).list_namespaced_pod(ns)
    assert exc.value.status == 403
    kubeconfig = apiserver.serviceaccount_kubeconfig(ns, "reader")
    rbac = client.RbacAuthorizationV1Api(apiserver.client())
    rbac.create_namespaced_role(ns, {"metadata": {"name": "pods"}, "rules": [
        {"apiGroups": [""], "resources": ["pods"], "verbs": ["list"]}]})
    rbac.create_namespaced_role_binding(ns, {
        "metadata": {"name": "reader"}, "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "pods"},
        "subjects": [{"kind": "ServiceAccount", "name": "reader", "namespace": ns}]})
    from kubernetes import config
    sa = config.new_client_from_config(config_file=str(kubeconfig))
    assert client.CoreV1Api(sa).list_namespaced_pod(ns).items == []
    with pytest.raises(client.ApiException):
        client.BatchV1Api(sa).list_namespaced_job(ns)
