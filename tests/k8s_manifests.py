"""k8s_manifests.py: the Kubernetes manifests in contrib/kubernetes/ are
valid YAML and say what the node-local deployment needs (README there).

Every document of every contrib/kubernetes/*.yaml is parsed. The DaemonSet
must run on the host network with node-critical priority on every node,
roll out a tenth of the nodes at a time, probe /health and /ready on the
port the ConfigMap's dotproxy.conf gives http-listen, announce that port to
Prometheus, run as a non-root user with only CAP_NET_BIND_SERVICE, and ask
for memory consistent with the config's cache-size. The config must listen
on 169.254.20.10 and on the address the init container sets up.

Needs PyYAML (Debian package python3-yaml). Prints "ok:" or "FAIL:" lines;
exits 1 if anything failed, 99 when PyYAML is missing.
"""

import glob
import os
import re
import sys

try:
    import yaml
except ImportError:
    # python3 on PATH may not be Debian's (pyenv, a venv); Debian's has
    # python3-yaml once contrib/deps.sh --test has run.
    debian = '/usr/bin/python3'
    if (os.path.realpath(sys.executable) != os.path.realpath(debian)
            and os.access(debian, os.X_OK)
            and not os.environ.get('K8S_MANIFESTS_REEXEC')):
        os.environ['K8S_MANIFESTS_REEXEC'] = '1'
        os.execv(debian, [debian] + sys.argv)
    print('k8s_manifests.py: PyYAML not found (Debian package: python3-yaml)',
          file=sys.stderr)
    sys.exit(99)

top_srcdir = os.environ.get('top_srcdir') or os.path.join(
    os.path.dirname(os.path.abspath(__file__)), '..')
KDIR = os.path.join(top_srcdir, 'contrib', 'kubernetes')

LINK_LOCAL = '169.254.20.10'
failed = False


def check(cond, what):
    global failed
    if cond:
        print('ok: ' + what)
    else:
        print('FAIL: ' + what)
        failed = True
    return cond


def get(d, *path, default=None):
    """d[path[0]][path[1]]..., or default where a step is missing."""
    for p in path:
        if isinstance(d, dict) and p in d:
            d = d[p]
        elif isinstance(d, list) and isinstance(p, int) and p < len(d):
            d = d[p]
        else:
            return default
    return d


def quantity(q):
    """A Kubernetes memory quantity ("96Mi", "1G", "1048576") in bytes."""
    m = re.fullmatch(r'([0-9]+(?:\.[0-9]+)?)(Ki|Mi|Gi|Ti|k|M|G|T)?', str(q))
    if not m:
        raise ValueError('bad quantity %r' % q)
    mult = {None: 1, 'k': 1000, 'M': 1000**2, 'G': 1000**3, 'T': 1000**4,
            'Ki': 1024, 'Mi': 1024**2, 'Gi': 1024**3, 'Ti': 1024**4}
    return int(float(m.group(1)) * mult[m.group(2)])


def conf_size(s):
    """A dotproxy.conf size ("64M": K, M, G are powers of 1024) in bytes."""
    m = re.fullmatch(r'([0-9]+)([KMG]?)', s)
    if not m:
        raise ValueError('bad size %r' % s)
    return int(m.group(1)) * {'': 1, 'K': 1024, 'M': 1024**2,
                              'G': 1024**3}[m.group(2)]


def conf_lines(text):
    """dotproxy.conf as (key, value) pairs, comments dropped (a '#' that
    starts a word starts a comment)."""
    out = []
    for line in text.splitlines():
        words = []
        for w in line.split():
            if w.startswith('#'):
                break
            words.append(w)
        if words:
            out.append((words[0], ' '.join(words[1:])))
    return out


def main():
    files = sorted(glob.glob(os.path.join(KDIR, '*.yaml')))
    check(len(files) >= 2, 'contrib/kubernetes has the manifests (%d files)'
          % len(files))
    docs = []
    for f in files:
        try:
            with open(f) as fp:
                these = [d for d in yaml.safe_load_all(fp) if d is not None]
        except yaml.YAMLError as e:
            check(False, '%s parses: %s' % (f, e))
            continue
        for d in these:
            check(isinstance(d, dict) and d.get('apiVersion') and d.get('kind')
                  and get(d, 'metadata', 'name'),
                  '%s: %s/%s has apiVersion, kind and metadata.name'
                  % (os.path.basename(f), get(d, 'kind'),
                     get(d, 'metadata', 'name')))
        docs += these

    by_kind = {}
    for d in docs:
        by_kind.setdefault(d.get('kind'), []).append(d)
    dss = by_kind.get('DaemonSet', [])
    cms = by_kind.get('ConfigMap', [])
    if not (check(len(dss) == 1, 'one DaemonSet')
            and check(len(cms) == 1, 'one ConfigMap')):
        return

    # ---- the config ----
    cm = cms[0]
    text = get(cm, 'data', 'dotproxy.conf')
    if not check(isinstance(text, str), 'ConfigMap has data["dotproxy.conf"]'):
        return
    conf = conf_lines(text)
    listens = [v for k, v in conf if k == 'listen']
    http = [v for k, v in conf if k == 'http-listen']
    sizes = [v for k, v in conf if k == 'cache-size']
    check(LINK_LOCAL + '@53' in listens, 'config listens on %s@53' % LINK_LOCAL)
    check(len(listens) >= 2, 'config listens on a second (cluster DNS) address')
    check(any(k == 'upstream' for k, _ in conf), 'config has upstream lines')
    check(len(http) == 1, 'config has one http-listen')
    http_port = int(http[0].rsplit('@', 1)[1]) if http and '@' in http[0] else None
    check(http_port == 9253, 'http-listen is on port 9253')
    check(len(sizes) == 1, 'config has cache-size')
    cache = conf_size(sizes[0]) if sizes else 0
    lameduck = [v for k, v in conf if k == 'lameduck']

    # ---- the DaemonSet ----
    ds = dss[0]
    pod = get(ds, 'spec', 'template', 'spec', default={})
    meta = get(ds, 'spec', 'template', 'metadata', default={})
    sel = get(ds, 'spec', 'selector', 'matchLabels', default={})
    labels = meta.get('labels') or {}
    check(sel and all(labels.get(k) == v for k, v in sel.items()),
          'selector matches the pod labels')
    check(pod.get('hostNetwork') is True, 'hostNetwork: true')
    check(pod.get('dnsPolicy') == 'Default', 'dnsPolicy: Default')
    check(pod.get('priorityClassName') == 'system-node-critical',
          'priorityClassName: system-node-critical')
    check(any(t == {'operator': 'Exists'} for t in pod.get('tolerations') or []),
          'tolerates every taint (operator: Exists alone)')
    strategy = get(ds, 'spec', 'updateStrategy', default={})
    check(strategy.get('type', 'RollingUpdate') == 'RollingUpdate'
          and get(strategy, 'rollingUpdate', 'maxUnavailable') == '10%',
          'RollingUpdate with maxUnavailable 10%')
    ann = meta.get('annotations') or {}
    check(ann.get('prometheus.io/scrape') == 'true',
          'annotation prometheus.io/scrape: "true"')
    check(ann.get('prometheus.io/port') == str(http_port),
          'annotation prometheus.io/port is the http-listen port')

    ctrs = [c for c in pod.get('containers') or [] if c.get('name') == 'dotproxy']
    if not check(len(ctrs) == 1, 'a container named dotproxy'):
        return
    c = ctrs[0]
    check(get(c, 'livenessProbe', 'httpGet', 'path') == '/health'
          and get(c, 'livenessProbe', 'httpGet', 'port') == http_port,
          'livenessProbe: GET /health on the http-listen port')
    check(get(c, 'readinessProbe', 'httpGet', 'path') == '/ready'
          and get(c, 'readinessProbe', 'httpGet', 'port') == http_port,
          'readinessProbe: GET /ready on the http-listen port')

    sc = dict(pod.get('securityContext') or {})
    sc.update(c.get('securityContext') or {})
    check(sc.get('runAsNonRoot') is True, 'runAsNonRoot: true')
    check(isinstance(sc.get('runAsUser'), int) and sc['runAsUser'] > 0,
          'runAsUser is not 0')
    check(sc.get('allowPrivilegeEscalation') is False,
          'allowPrivilegeEscalation: false')
    check(sc.get('readOnlyRootFilesystem') is True,
          'readOnlyRootFilesystem: true')
    check(get(sc, 'capabilities', 'drop') == ['ALL']
          and get(sc, 'capabilities', 'add') == ['NET_BIND_SERVICE'],
          'capabilities: drop ALL, add NET_BIND_SERVICE only')
    check(not sc.get('privileged'), 'the dotproxy container is not privileged')

    req = get(c, 'resources', 'requests', 'memory')
    lim = get(c, 'resources', 'limits', 'memory')
    if check(req is not None and lim is not None,
             'memory request and limit are set'):
        req, lim = quantity(req), quantity(lim)
        check(lim >= req, 'memory limit >= request')
        check(req >= cache and lim >= cache,
              'memory request and limit >= cache-size (%d MiB)'
              % (cache // 1024**2))

    grace = pod.get('terminationGracePeriodSeconds', 30)
    if lameduck:
        m = re.fullmatch(r'([0-9]+)(ms|s|m)?', lameduck[0])
        secs = int(m.group(1)) * {'ms': 0.001, 's': 1, None: 1,
                                  'm': 60}[m.group(2)] if m else None
        check(secs is not None and grace > secs,
              'terminationGracePeriodSeconds > lameduck')

    # The config reaches the container: a ConfigMap volume mounted where
    # the -c argument points.
    vols = {v.get('name'): v for v in pod.get('volumes') or []}
    args = (c.get('command') or []) + (c.get('args') or [])
    cpath = args[args.index('-c') + 1] if '-c' in args[:-1] else '/etc/dotproxy.conf'
    mounted = False
    for vm in c.get('volumeMounts') or []:
        v = vols.get(vm.get('name')) or {}
        if get(v, 'configMap', 'name') == get(cm, 'metadata', 'name') and \
                cpath.startswith(vm.get('mountPath', '').rstrip('/') + '/'):
            mounted = True
    check(mounted, 'the ConfigMap is mounted where -c %s points' % cpath)

    # The init container puts on the node the addresses dotproxy listens on.
    inits = pod.get('initContainers') or []
    env = {}
    for ic in inits:
        env.update({e.get('name'): e.get('value') for e in ic.get('env') or []})
    ips = {a.rsplit('@', 1)[0] for a in listens}
    check(inits and env.get('LOCAL_IP') == LINK_LOCAL
          and env.get('CLUSTER_DNS_IP') in ips and ips <= set(env.values()),
          'the init container sets up every address dotproxy listens on')


if __name__ == '__main__':
    main()
    sys.exit(1 if failed else 0)
