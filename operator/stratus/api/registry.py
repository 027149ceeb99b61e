"""The API group and version of every Stratus kind, and the names shared across them."""

GROUP = "stratus.dev"
VERSION = "v1alpha1"
API_VERSION = f"{GROUP}/{VERSION}"
#: `kubectl get stratus` lists every Stratus object.
CATEGORY = "stratus"
#: Set on objects whose deletion must clean up outside Kubernetes, or wait for children.
FINALIZER = "stratus.dev/finalizer"
#: Prefix for Stratus' labels and annotations on the objects it creates.
LABEL_PREFIX = "stratus.dev"
