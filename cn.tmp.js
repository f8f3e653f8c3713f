require('@kubernetes/client-node')
