#!/usr/bin/env python3
"""Checks provision/lima.yaml: valid YAML, only fields Lima knows, the seed's settings, the agent
socket forward, a readiness probe that runs the agent health check, idempotent provisioning of the
agent, and nothing of the old scripts (create-namespace.sh, sandbox.sh, sudo rules).

usage: test_lima_yaml.py PATH/TO/lima.yaml      exit status 0 when every check passes
"""
import os
import re
import subprocess
import sys
import tempfile

import yaml  # python3-yaml

failures = []


def check(condition, what):
    if not condition:
        failures.append(what)


# The fields this configuration may use (all documented in lima's templates/default.yaml).
KNOWN = {
    "images": {"location", "arch"},
    "cpus": None,
    "memory": None,
    "disk": None,
    "mounts": {"location", "writable"},
    "ssh": {"localPort", "loadDotSSHPubKeys", "forwardAgent"},
    "provision": {"mode", "script"},
    "probes": {"mode", "description", "script"},
    "portForwards": {"guestSocket", "hostSocket"},
}
# Template variables Lima expands in provision and probe scripts.
TEMPLATE_VARS = {"Home", "Name", "Hostname", "UID", "User"}


def render(script):
    """Expands the template variables the way Lima would, with sample values."""
    values = {"Home": "/home/alice.linux", "Name": "llima-box", "Hostname": "lima-llima-box",
              "UID": "501", "User": "alice"}
    return re.sub(r"{{\s*\.(\w+)\s*}}", lambda m: values.get(m.group(1), m.group(0)), script)


def main():
    path = sys.argv[1]
    with open(path, encoding="utf-8") as f:
        text = f.read()
    try:
        config = yaml.safe_load(text)
    except yaml.YAMLError as e:
        print(f"FAIL: {path} is not valid YAML: {e}")
        return 1
    if not isinstance(config, dict):
        print(f"FAIL: {path} is not a YAML mapping")
        return 1

    # Only known fields, top level and nested.
    for key, value in config.items():
        check(key in KNOWN, f"unknown top-level field {key!r}")
        sub = KNOWN.get(key)
        if sub is None:
            continue
        items = value if isinstance(value, list) else [value]
        check(isinstance(value, list) or key == "ssh", f"{key} must be a list")
        for item in items:
            check(isinstance(item, dict), f"{key}: entry {item!r} is not a mapping")
            if isinstance(item, dict):
                for k in item:
                    check(k in sub, f"unknown field {key}.{k}")

    # The seed's settings.
    images = config.get("images") or []
    arches = {i.get("arch"): i.get("location", "") for i in images}
    check(set(arches) == {"x86_64", "aarch64"}, f"images must be x86_64 and aarch64, got {sorted(arches)}")
    check("ubuntu-24.04-server-cloudimg-amd64.img" in arches.get("x86_64", ""), "x86_64 image is not Ubuntu 24.04 amd64")
    check("ubuntu-24.04-server-cloudimg-arm64.img" in arches.get("aarch64", ""), "aarch64 image is not Ubuntu 24.04 arm64")
    check(config.get("cpus") == 4, "cpus must be 4")
    check(config.get("memory") == "8GiB", "memory must be 8GiB")
    check(config.get("disk") == "100GiB", "disk must be 100GiB")
    mounts = {m.get("location"): m.get("writable") for m in config.get("mounts") or []}
    check(mounts == {"~": True, "/tmp/lima": True}, f"mounts must be ~ and /tmp/lima, writable: {mounts}")
    check(config.get("ssh") == {"localPort": 60022, "loadDotSSHPubKeys": True, "forwardAgent": True},
          f"ssh settings differ from the seed: {config.get('ssh')}")

    # The agent socket forward.
    check({"guestSocket": "/run/llima-box/agent.sock", "hostSocket": "agent.sock"}
          in (config.get("portForwards") or []), "portForwards lacks the agent.sock forward")

    # Provisioning.
    provision = config.get("provision") or []
    scripts = [p.get("script", "") for p in provision]
    check(all(p.get("mode") == "system" for p in provision), "every provision script must be mode: system")
    packages = [s for s in scripts if re.search(r"apt-get install", s)]
    check(any(all(pkg in s for pkg in ("zsh", "build-essential", "curl", "git")) for s in packages),
          "no provision script installs zsh build-essential curl git")
    check(any("mise.run" in s for s in scripts), "no provision script installs mise")
    agent = [s for s in scripts if "install-agent.sh" in s]
    check(len(agent) == 1, "exactly one provision script must run install-agent.sh")
    if agent:
        check("--tarball" in agent[0], "the agent provision script must pass --tarball")
        check("{{.User}}" in agent[0] or "LIMA_CIDATA_USER" in agent[0],
              "the agent provision script must pass Lima's user as socket owner")
        check("agent-src.tar.gz" in agent[0], "the agent provision script must look for agent-src.tar.gz")

    # Readiness probe: runs the agent health check.
    probes = config.get("probes") or []
    ready = [p for p in probes if p.get("mode") == "readiness"]
    check(any("/usr/local/libexec/llima-box/health-check" in p.get("script", "") and
              "/run/llima-box/agent.sock" in p.get("script", "") for p in ready),
          "no readiness probe runs the agent health check on /run/llima-box/agent.sock")
    check(all(p.get("description") for p in probes), "every probe needs a description")

    # Nothing of the old scripts.
    for word in ("create-namespace.sh", "sandbox.sh", "sudoers", "NOPASSWD"):
        check(word not in text, f"{word} must not appear in lima.yaml")

    # Every script: starts with #!, uses only Lima's template variables, is valid bash.
    for where, entries in (("provision", provision), ("probes", probes)):
        for n, entry in enumerate(entries):
            script = entry.get("script", "")
            check(script.startswith("#!/bin/bash"), f"{where}[{n}] must start with #!/bin/bash")
            for var in re.findall(r"{{\s*\.?([\w.]+)\s*}}", script):
                check(var in TEMPLATE_VARS, f"{where}[{n}] uses unknown template variable {var}")
            with tempfile.NamedTemporaryFile("w", suffix=".sh", delete=False) as f:
                f.write(render(script))
            try:
                r = subprocess.run(["bash", "-n", f.name], capture_output=True, text=True)
                check(r.returncode == 0, f"{where}[{n}] is not valid bash: {r.stderr.strip()}")
            finally:
                os.unlink(f.name)

    for f in failures:
        print(f"FAIL: {f}")
    if failures:
        return 1
    print(f"ok: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
