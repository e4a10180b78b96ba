#!/usr/bin/env python3
"""make check: the Kubernetes manifests in deploy/kubernetes.

Every file there must parse as YAML (several documents a file), every
document must have apiVersion, kind and metadata.name, and the pieces must
fit together the way the daemon reads them:

- the ConfigMap's ollama-pool.conf is accepted by `ollama-pool -t` (the
  backend's host name, which only the cluster DNS knows, is replaced by
  127.0.0.1 first, and a token file is made from a stand-in token), and
  -t's effective settings have what the manifests rely on: the listen and
  admin ports, allow_remote, a [backend] whose url names a host (so its
  addresses are members), resolve_interval and prewarm, no resolver;
- that url names the headless Service (clusterIP None, only ready
  addresses) of the Ollama StatefulSet, its port and the namespace of
  kustomization.yaml;
- the probes ask /ollama-pool/health on the listen port (readiness) and
  the admin listener (liveness);
- the Secret is mounted where CREDENTIALS_DIRECTORY points and holds the
  file client_tokens_file names, and as shipped holds no token, which -t
  refuses.

Then each check is shown to catch what it is there for: a table of broken
copies of the manifests, each of which must fail its check.

Needs PyYAML (python3-yaml).  The environment make check sets: TOP_SRCDIR,
OLLAMA_POOL_BIN.
"""

import copy
import os
import re
import subprocess
import sys
import tempfile

try:
    import yaml
except ImportError:
    print("check_manifests: PyYAML is missing: apt-get install python3-yaml")
    sys.exit(99)

TOP_SRCDIR = os.environ.get(
    "TOP_SRCDIR", os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
DAEMON = os.environ.get("OLLAMA_POOL_BIN", os.path.join(
    os.environ.get("TOP_BUILDDIR", TOP_SRCDIR), "src", "ollama-pool"))
MANIFESTS = os.path.join(TOP_SRCDIR, "deploy", "kubernetes")
HEALTH = "/ollama-pool/health"
CHECK_TIMEOUT_S = 30  # one run of -t; it takes milliseconds


class Broken(Exception):
    """A check's finding."""


def need(cond, fmt, *args):
    if not cond:
        raise Broken(fmt % args)


# ---- reading -------------------------------------------------------------

def load_manifests():
    """{file name: [documents]}, every .yaml in deploy/kubernetes."""
    files = sorted(f for f in os.listdir(MANIFESTS) if f.endswith(".yaml"))
    out = {}
    for f in files:
        with open(os.path.join(MANIFESTS, f), encoding="utf-8") as fp:
            out[f] = [d for d in yaml.safe_load_all(fp) if d is not None]
    return out


def docs(m, kind=None):
    for f in sorted(m):
        if f == "kustomization.yaml":
            continue
        for d in m[f]:
            if isinstance(d, dict) and (kind is None or d.get("kind") == kind):
                yield d


def one(m, kind, name=None):
    found = [d for d in docs(m, kind)
             if name is None or d["metadata"]["name"] == name]
    need(len(found) == 1, "%d %s documents%s, not one", len(found), kind,
         "" if name is None else " named " + name)
    return found[0]


def ini_sections(text):
    """The daemon's INI as [(section, key, value, line index)]: ; and #
    comments, ; after a blank ends a value."""
    out, section = [], ""
    for i, line in enumerate(text.split("\n")):
        s = line.strip()
        if not s or s[0] in "#;":
            continue
        h = re.match(r"\[(.*)\]$", s)
        if h:
            section = " ".join(h.group(1).split()).lower()
            continue
        kv = re.match(r"([^=]+?)\s*=\s*(.*)$", s)
        if kv:
            value = re.split(r"\s;", kv.group(2))[0].strip()
            out.append((section, kv.group(1).lower(), value, i))
    return out


def parse_url(url):
    u = re.match(r"(?:(https?)://)?([^:/\[\]]+|\[[^\]]+\])(?::(\d+))?/?$", url)
    need(u, "url %r is not scheme://host:port", url)
    scheme = u.group(1) or "http"
    port = int(u.group(3)) if u.group(3) else (
        11434 if not u.group(1) else 80 if scheme == "http" else 443)
    return scheme, u.group(2), port


def is_ip(host):
    return bool(re.match(r"^[0-9.]+$", host)) or host.startswith("[")


def container(d):
    cs = d["spec"]["template"]["spec"]["containers"]
    need(len(cs) == 1, "%s %s has %d containers, not one", d["kind"],
         d["metadata"]["name"], len(cs))
    return cs[0]


def port_of(c, port):
    """A probe's or Service's port, a number or a container port's name,
    as the container port number it is."""
    for p in c.get("ports", []):
        if port in (p.get("name"), p.get("containerPort")):
            return p["containerPort"]
    raise Broken("port %r is none of container %s's ports" % (
        port, c.get("name")))


def env_of(c, name):
    for e in c.get("env", []):
        if e.get("name") == name:
            return e.get("value")
    return None


def listen_port(addr):
    return int(addr.rsplit(":", 1)[1])


# ---- the daemon's view ---------------------------------------------------

class Setup:
    """What the checks share: the documents, and the ConfigMap's file as
    -t takes it (run once per distinct file, tokens and all)."""

    def __init__(self, m, tmp):
        self.m = m
        self.tmp = tmp
        self.runs = {}

    def pool(self):
        """The Deployment whose container runs ollama-pool -c FILE."""
        for d in docs(self.m, "Deployment"):
            c = container(d)
            argv = list(c.get("command", [])) + list(c.get("args", []))
            if argv and os.path.basename(argv[0]) == "ollama-pool":
                return d
        raise Broken("no Deployment runs ollama-pool")

    def pool_argv(self):
        c = container(self.pool())
        return list(c.get("command", [])) + list(c.get("args", []))

    def volume_mount(self, kind_key, name_key, name):
        """The mount path of the pool's volume of that source."""
        spec = self.pool()["spec"]["template"]["spec"]
        for v in spec.get("volumes", []):
            src = v.get(kind_key)
            if src is not None and src.get(name_key) == name:
                for vm in container(self.pool()).get("volumeMounts", []):
                    if vm["name"] == v["name"]:
                        return vm["mountPath"]
                raise Broken("volume %s is not mounted" % v["name"])
        raise Broken("the Deployment has no %s volume of %s" % (
            kind_key, name))

    def config(self):
        """(ConfigMap, key) of the file -c names."""
        argv = self.pool_argv()
        need("-c" in argv and argv.index("-c") + 1 < len(argv),
             "ollama-pool is not run with -c FILE: %s", argv)
        path = argv[argv.index("-c") + 1]
        for cm in docs(self.m, "ConfigMap"):
            name = cm["metadata"]["name"]
            try:
                mount = self.volume_mount("configMap", "name", name)
            except Broken:
                continue
            key = os.path.relpath(path, mount)
            if key in cm.get("data", {}):
                return cm, key
        raise Broken("no mounted ConfigMap holds %s" % path)

    def conf_text(self):
        cm, key = self.config()
        return cm["data"][key]

    def backend_urls(self):
        """[(backend name, url)] of the file's [backend NAME] sections."""
        return [(s[len("backend "):], v)
                for s, k, v, _ in ini_sections(self.conf_text())
                if s.startswith("backend ") and k == "url"]

    def secret(self):
        spec = self.pool()["spec"]["template"]["spec"]
        names = [v["secret"]["secretName"] for v in spec.get("volumes", [])
                 if "secret" in v]
        need(len(names) == 1, "the Deployment mounts %d Secrets, not one",
             len(names))
        return one(self.m, "Secret", names[0])

    def secret_files(self):
        s = self.secret()
        files = dict(s.get("stringData") or {})
        for k in s.get("data") or {}:
            files.setdefault(k, None)  # base64: not read here
        return files

    def check_config(self, tokens):
        """-t on the ConfigMap's file, each backend host made 127.0.0.1,
        in a CREDENTIALS_DIRECTORY whose token file holds tokens:
        (exit status, stdout, stderr)."""
        lines = self.conf_text().split("\n")
        for s, k, v, i in ini_sections(self.conf_text()):
            if s.startswith("backend ") and k == "url":
                scheme, host, port = parse_url(v)
                lines[i] = "url = %s://127.0.0.1:%d" % (scheme, port)
        text = "\n".join(lines)
        cache = (text, tokens)
        if cache in self.runs:
            return self.runs[cache]
        n = len(self.runs)
        conf = os.path.join(self.tmp, "conf%d" % n)
        creds = os.path.join(self.tmp, "creds%d" % n)
        os.mkdir(creds)
        with open(conf, "w", encoding="utf-8") as fp:
            fp.write(text)
        tokname = tokens_file_name(text)
        if tokname is not None and not os.path.isabs(tokname):
            with open(os.path.join(creds, tokname), "w",
                      encoding="utf-8") as fp:
                fp.write(tokens)
        env = dict(os.environ, CREDENTIALS_DIRECTORY=creds)
        r = subprocess.run([DAEMON, "-t", "-c", conf], env=env,
                           capture_output=True, text=True,
                           timeout=CHECK_TIMEOUT_S, check=False)
        self.runs[cache] = (r.returncode, r.stdout, r.stderr)
        return self.runs[cache]

    def effective(self):
        """-t's settings, {section: {key: value}}, with a stand-in token."""
        rc, out, err = self.check_config("stand-in-token\n")
        need(rc == 0, "ollama-pool -t refuses the ConfigMap's file: %s",
             err.strip() or out.strip())
        eff, section = {}, None
        for line in out.split("\n"):
            h = re.match(r"\[(.*)\]$", line)
            if h:
                section = h.group(1)
                eff[section] = {}
            elif section and " = " in line and not line.startswith("#"):
                k, v = line.split(" = ", 1)
                eff[section][k] = v.strip()
            elif section and line.startswith("# "):
                eff[section].setdefault("#", []).append(line)
        return eff


def tokens_file_name(conf_text):
    for s, k, v, _ in ini_sections(conf_text):
        if s == "server" and k == "client_tokens_file":
            return v
    return None


# ---- the checks ----------------------------------------------------------

def check_yaml(st):
    """Every file parses, every document has apiVersion, kind, a name."""
    need(st.m, "no .yaml file in %s", MANIFESTS)
    seen = set()
    for f, ds in sorted(st.m.items()):
        need(ds, "%s holds no document", f)
        for i, d in enumerate(ds):
            where = "%s, document %d" % (f, i + 1)
            need(isinstance(d, dict), "%s is not a mapping", where)
            for k in ("apiVersion", "kind"):
                need(isinstance(d.get(k), str) and d[k],
                     "%s has no %s", where, k)
            md = d.get("metadata")
            need(isinstance(md, dict) and isinstance(md.get("name"), str)
                 and md["name"], "%s (%s) has no metadata.name", where,
                 d["kind"])
            key = (d["kind"], md["name"])
            need(key not in seen, "%s: a second %s %s", where, *key)
            seen.add(key)


def check_kustomization(st):
    """kubectl apply -k takes every other file, into one namespace."""
    k = st.m.get("kustomization.yaml")
    need(k, "no kustomization.yaml")
    k = k[0]
    need(k["kind"] == "Kustomization", "kustomization.yaml is a %s",
         k["kind"])
    others = sorted(f for f in st.m if f != "kustomization.yaml")
    need(sorted(k.get("resources", [])) == others,
         "kustomization.yaml lists %s, the files are %s",
         k.get("resources"), others)
    need(isinstance(k.get("namespace"), str) and k["namespace"],
         "kustomization.yaml sets no namespace")


def check_config(st):
    """-t accepts the file; what the manifests rely on is in it."""
    eff = st.effective()
    server = eff.get("server", {})
    listens = server.get("listen", "").split()
    need(listens, "-t shows no listen")
    for a in listens:
        need(not a.startswith("unix:"), "listen %s: not a TCP port", a)
    need(any(not a.startswith("127.") and not a.startswith("[::1]")
             for a in listens),
         "listen %s: loopback only, the kubelet and the Service cannot "
         "reach it", listens)
    need(server.get("allow_remote") == "yes", "allow_remote is not yes")
    need(server.get("admin_listen"), "no admin_listen")
    need(server.get("client_tokens_file"), "no client_tokens_file")
    need(any(re.match(r"# 1 token read from ", c)
             for c in server.get("#", [])),
         "-t read no token from the stand-in file: %s", server.get("#"))
    backends = [s for s in eff if s.startswith("backend ")]
    need(len(backends) == 1, "%d [backend] sections, not one", len(backends))
    b = eff[backends[0]]
    need(b.get("url", "").startswith("http://127.0.0.1:"),
         "-t's url is %s", b.get("url"))
    need(b.get("resolve_interval") == "10", "resolve_interval %s, not 10",
         b.get("resolve_interval"))
    need(b.get("prewarm") == "1", "prewarm %s, not 1", b.get("prewarm"))
    # The pod's /etc/resolv.conf names the cluster DNS.
    need(eff.get("upstream", {}).get("resolver") == "",
         "resolver is %r: the cluster DNS is the pod's own",
         eff.get("upstream", {}).get("resolver"))
    (name, url), = st.backend_urls()
    _, host, _ = parse_url(url)
    need(not is_ip(host), "backend %s: url %s names no host: one member, "
         "not one per pod", name, url)


def check_headless(st):
    """The url names the headless Service of the Ollama pods."""
    (name, url), = st.backend_urls()
    _, host, port = parse_url(url)
    k = st.m["kustomization.yaml"][0]
    labels = host.split(".")
    need(len(labels) == 5 and labels[2:] == ["svc", "cluster", "local"],
         "url host %s is not SERVICE.NAMESPACE.svc.cluster.local", host)
    need(labels[1] == k.get("namespace"),
         "url host %s is in namespace %s, kustomization.yaml's is %s",
         host, labels[1], k.get("namespace"))
    svc = one(st.m, "Service", labels[0])
    spec = svc["spec"]
    need(spec.get("clusterIP") == "None",
         "Service %s is not headless (clusterIP: None)", labels[0])
    need(spec.get("publishNotReadyAddresses") is False,
         "Service %s must say publishNotReadyAddresses: false", labels[0])
    ports = [p for p in spec.get("ports", []) if p.get("port") == port]
    need(ports, "Service %s has no port %d", labels[0], port)
    sts = [d for d in docs(st.m, "StatefulSet")
           if d["spec"].get("serviceName") == labels[0]]
    need(len(sts) == 1, "%d StatefulSets name Service %s", len(sts),
         labels[0])
    pod = sts[0]["spec"]["template"]["metadata"].get("labels", {})
    sel = spec.get("selector", {})
    need(sel and all(pod.get(k) == v for k, v in sel.items()),
         "Service %s selects %s, the pods are %s", labels[0], sel, pod)
    target = ports[0].get("targetPort", port)
    need(port_of(container(sts[0]), target) ==
         listen_port(env_of(container(sts[0]), "OLLAMA_HOST") or ":0"),
         "Service %s's port %d does not reach OLLAMA_HOST", labels[0], port)


def check_statefulset(st):
    """Ollama: one GPU a pod, all interfaces, its parallelism the proxy's,
    its models on a volume of its own."""
    (name, url), = st.backend_urls()
    sts = [d for d in docs(st.m, "StatefulSet")
           if d["spec"].get("serviceName") == parse_url(url)[1].split(".")[0]]
    need(len(sts) == 1, "no StatefulSet for the backend's Service")
    s = sts[0]
    c = container(s)
    need(c.get("image", "").split(":")[0] == "ollama/ollama",
         "image %s is not ollama/ollama", c.get("image"))
    gpus = c.get("resources", {}).get("limits", {}).get("nvidia.com/gpu")
    need(gpus == 1, "nvidia.com/gpu limit %r, not 1", gpus)
    host = env_of(c, "OLLAMA_HOST")
    need(host is not None and host.startswith("0.0.0.0:"),
         "OLLAMA_HOST %r: not every interface", host)
    eff = st.effective()
    par = eff["backend " + name].get("num_parallel")
    need(env_of(c, "OLLAMA_NUM_PARALLEL") == par,
         "OLLAMA_NUM_PARALLEL %r, the proxy's num_parallel %s",
         env_of(c, "OLLAMA_NUM_PARALLEL"), par)
    tmpl = s["spec"]["template"]["metadata"].get("labels", {})
    need(all(tmpl.get(k) == v for k, v in
             s["spec"]["selector"]["matchLabels"].items()),
         "the StatefulSet's selector does not match its pods")
    vcts = [v["metadata"]["name"]
            for v in s["spec"].get("volumeClaimTemplates", [])]
    mounts = {vm["mountPath"]: vm["name"] for vm in c.get("volumeMounts", [])}
    need(mounts.get("/root/.ollama") in vcts,
         "/root/.ollama is not on a volumeClaimTemplate (%s, %s)", mounts,
         vcts)
    need(c.get("readinessProbe"), "Ollama has no readiness probe: the "
         "Service would list pods that do not answer yet")


def check_tokens(st):
    """The Secret is where CREDENTIALS_DIRECTORY says, holds the file
    client_tokens_file names, and holds no token as shipped."""
    c = container(st.pool())
    creds = env_of(c, "CREDENTIALS_DIRECTORY")
    need(creds, "CREDENTIALS_DIRECTORY is not set")
    s = st.secret()
    mount = st.volume_mount("secret", "secretName", s["metadata"]["name"])
    need(os.path.normpath(mount) == os.path.normpath(creds),
         "the Secret is mounted at %s, CREDENTIALS_DIRECTORY is %s", mount,
         creds)
    name = tokens_file_name(st.conf_text())
    need(name and not os.path.isabs(name),
         "client_tokens_file %r is not relative to CREDENTIALS_DIRECTORY",
         name)
    files = st.secret_files()
    need(name in files, "the Secret has no %s (it has %s)", name,
         sorted(files))
    shipped = files[name]
    need(shipped is not None, "the Secret's %s is base64 data: ship it as "
         "stringData, with no token", name)
    real = [ln for ln in shipped.split("\n")
            if ln.strip() and not ln.strip().startswith("#")]
    need(not real, "the shipped Secret holds %d token(s): anyone who reads "
         "the tree would know them", len(real))
    rc, out, err = st.check_config(shipped)
    need(rc != 0 and "holds no token" in err,
         "-t did not refuse the shipped Secret: %d, %s", rc, err.strip())


def check_probes(st):
    """Readiness: /ollama-pool/health on the listen port; liveness: the
    admin listener, or a TCP probe of the listen port."""
    eff = st.effective()
    c = container(st.pool())
    listens = [listen_port(a) for a in eff["server"]["listen"].split()]
    admin = listen_port(eff["server"]["admin_listen"])
    declared = [p["containerPort"] for p in c.get("ports", [])]
    for p in listens + [admin]:
        need(p in declared, "port %d is not a container port (%s)", p,
             declared)
    r = c.get("readinessProbe", {}).get("httpGet")
    need(r, "no httpGet readiness probe")
    need(r.get("path") == HEALTH, "readiness path %s, not %s",
         r.get("path"), HEALTH)
    need(port_of(c, r.get("port")) in listens,
         "readiness probe port %s is not a listen port %s", r.get("port"),
         listens)
    lv = c.get("livenessProbe", {})
    if "httpGet" in lv:
        need(port_of(c, lv["httpGet"].get("port")) == admin and
             lv["httpGet"].get("path") in ("/metrics", "/health", "/stats"),
             "liveness %s on port %s: not the admin listener's",
             lv["httpGet"].get("path"), lv["httpGet"].get("port"))
    else:
        need("tcpSocket" in lv, "no liveness probe")
        need(port_of(c, lv["tcpSocket"].get("port")) in listens + [admin],
             "liveness TCP port %s is not one the daemon listens on",
             lv["tcpSocket"].get("port"))


def check_deployment(st):
    """Two replicas or more, behind a Service, given time to drain."""
    d = st.pool()
    need(d["spec"].get("replicas", 1) >= 2, "%s replica(s): fewer than two",
         d["spec"].get("replicas", 1))
    pod = d["spec"]["template"]["metadata"].get("labels", {})
    need(all(pod.get(k) == v for k, v in
             d["spec"]["selector"]["matchLabels"].items()),
         "the Deployment's selector does not match its pods")
    eff = st.effective()
    c = container(d)
    listens = [listen_port(a) for a in eff["server"]["listen"].split()]
    front = []
    for s in docs(st.m, "Service"):
        sel = s["spec"].get("selector", {})
        if sel and all(pod.get(k) == v for k, v in sel.items()):
            front.append(s)
    need(len(front) == 1, "%d Services select the proxy's pods", len(front))
    spec = front[0]["spec"]
    need(spec.get("clusterIP") != "None", "the clients' Service is headless")
    for p in spec.get("ports", []):
        need(port_of(c, p.get("targetPort", p["port"])) in listens,
             "Service port %s does not reach a listen port", p["port"])
    need(any(p["port"] == 11435 for p in spec.get("ports", [])),
         "the clients' Service has no port 11435")
    grace = d["spec"]["template"]["spec"].get(
        "terminationGracePeriodSeconds", 30)
    pre = c.get("lifecycle", {}).get("preStop", {}).get("exec", {}).get(
        "command", [])
    sleep = float(pre[1]) if len(pre) == 2 and pre[0] == "sleep" else 0
    drain = float(eff["server"]["shutdown_timeout"])
    need(grace > drain + sleep,
         "terminationGracePeriodSeconds %s: not above shutdown_timeout %g "
         "and the preStop sleep %g", grace, drain, sleep)


CHECKS = [
    ("yaml", check_yaml),
    ("kustomization", check_kustomization),
    ("config", check_config),
    ("headless", check_headless),
    ("statefulset", check_statefulset),
    ("tokens", check_tokens),
    ("probes", check_probes),
    ("deployment", check_deployment),
]


# ---- broken copies, each caught by its check -----------------------------

def doc(m, kind, name=None):
    for d in docs(m, kind):
        if name is None or d["metadata"]["name"] == name:
            return d
    raise KeyError(kind)


def pool_c(m):
    return container(doc(m, "Deployment"))


def sts_c(m):
    return container(doc(m, "StatefulSet"))


def set_env(c, name, value):
    for e in c["env"]:
        if e["name"] == name:
            e["value"] = value


def edit_conf(m, old, new):
    cm = doc(m, "ConfigMap")
    key = next(iter(cm["data"]))
    assert old in cm["data"][key], old
    cm["data"][key] = cm["data"][key].replace(old, new)


def edit_tokens(m, text):
    s = doc(m, "Secret")
    s["stringData"] = {k: text for k in s["stringData"]}


def rename_tokens(m):
    s = doc(m, "Secret")
    s["stringData"] = {k + "-old": v for k, v in s["stringData"].items()}


BROKEN = [
    ("a document without a name", "yaml",
     lambda m: doc(m, "Service", "ollama")["metadata"].pop("name")),
    ("a file kubectl apply -k leaves out", "kustomization",
     lambda m: m["kustomization.yaml"][0]["resources"].pop()),
    ("listen on loopback only", "config",
     lambda m: edit_conf(m, "listen = 0.0.0.0:11435",
                         "listen = 127.0.0.1:11435")),
    ("no allow_remote (-t refuses 0.0.0.0)", "config",
     lambda m: edit_conf(m, "allow_remote = yes", "allow_remote = no")),
    ("a resolver beside the cluster DNS", "config",
     lambda m: edit_conf(m, "[upstream]", "[upstream]\nresolver = 1.1.1.1")),
    ("an IP literal for the backend: one member", "config",
     lambda m: edit_conf(m, "ollama.default.svc.cluster.local",
                         "10.0.0.7")),
    ("the url names another Service", "headless",
     lambda m: edit_conf(m, "url = http://ollama.", "url = http://llama.")),
    ("the url in another namespace", "headless",
     lambda m: m["kustomization.yaml"][0].update(namespace="ai")),
    ("a Service with a cluster IP", "headless",
     lambda m: doc(m, "Service", "ollama")["spec"].pop("clusterIP")),
    ("not-ready pods in the answer", "headless",
     lambda m: doc(m, "Service", "ollama")["spec"].update(
         publishNotReadyAddresses=True)),
    ("Ollama's parallelism not the proxy's", "statefulset",
     lambda m: set_env(sts_c(m), "OLLAMA_NUM_PARALLEL", "4")),
    ("no GPU", "statefulset",
     lambda m: sts_c(m)["resources"]["limits"].pop("nvidia.com/gpu")),
    ("Ollama on loopback", "statefulset",
     lambda m: set_env(sts_c(m), "OLLAMA_HOST", "127.0.0.1:11434")),
    ("CREDENTIALS_DIRECTORY elsewhere", "tokens",
     lambda m: set_env(pool_c(m), "CREDENTIALS_DIRECTORY", "/run/secrets")),
    ("the Secret without client_tokens_file's file", "tokens",
     rename_tokens),
    ("a token shipped in the Secret", "tokens",
     lambda m: edit_tokens(m, "# a comment\nsk-0123456789\n")),
    ("readiness on the wrong path", "probes",
     lambda m: pool_c(m)["readinessProbe"]["httpGet"].update(
         path="/api/version")),
    ("readiness on the admin port", "probes",
     lambda m: pool_c(m)["readinessProbe"]["httpGet"].update(port="admin")),
    ("liveness on the client port's /metrics (forwarded to Ollama)",
     "probes",
     lambda m: pool_c(m)["livenessProbe"]["httpGet"].update(port="http")),
    ("one replica", "deployment",
     lambda m: doc(m, "Deployment")["spec"].update(replicas=1)),
    ("too little time to drain", "deployment",
     lambda m: doc(m, "Deployment")["spec"]["template"]["spec"].update(
         terminationGracePeriodSeconds=30)),
]


def run_checks(m, tmp):
    """{check name: None when it passed, else what it found}."""
    st = Setup(m, tmp)
    out = {}
    for name, fn in CHECKS:
        try:
            fn(st)
            out[name] = None
        except Broken as e:
            out[name] = str(e)
        except (KeyError, IndexError, TypeError, ValueError,
                AttributeError) as e:
            out[name] = "malformed: %s: %s" % (type(e).__name__, e)
    return out


def main():
    fails = total = 0
    with tempfile.TemporaryDirectory(prefix="check_manifests.") as tmp:
        try:
            m = load_manifests()
        except (OSError, yaml.YAMLError) as e:
            print("FAIL yaml: %s" % e)
            print("0%%: Checks: 1, Failures: 1, Errors: 0")
            return 1
        for name, found in run_checks(m, tmp).items():
            total += 1
            if found is None:
                print("ok   %s" % name)
            else:
                fails += 1
                print("FAIL %s: %s" % (name, found))
        for i, (what, check, breaks) in enumerate(BROKEN):
            total += 1
            bad = copy.deepcopy(m)
            breaks(bad)
            d = os.path.join(tmp, "broken%d" % i)
            os.mkdir(d)
            found = run_checks(bad, d)
            if found.get(check) is not None:
                print("ok   broken: %s: %s says %s" % (what, check,
                                                       found[check]))
            else:
                fails += 1
                print("FAIL broken: %s: %s passed" % (what, check))
    print("%d%%: Checks: %d, Failures: %d, Errors: 0" % (
        100 * (total - fails) // total, total, fails))
    return 1 if fails else 0


if __name__ == "__main__":
    sys.exit(main())
