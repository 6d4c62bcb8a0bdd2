//! The Kubernetes manifests under `deploy/`: each overlay is rendered by a small kustomize
//! subset (exactly what the manifests use), checked for the seed service's invariants, and,
//! when `kubernetes-validate` is on PATH, validated against the Kubernetes 1.30 schemas.
//! The InfisicalSecret is checked against `deploy/schemas/infisicalsecret.json`.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;

use serde::Deserialize;
use serde_json::{json, Map, Value};

const SECRET_KEYS: [&str; 5] = [
    "BUILDKIT_CA_PEM_B64",
    "BUILDKIT_CERT_PEM_B64",
    "BUILDKIT_KEY_PEM_B64",
    "BUILDKIT_CLIENT_CERT_PEM_B64",
    "BUILDKIT_CLIENT_KEY_PEM_B64",
];
const SERVER_KEYS: [&str; 3] = [
    "BUILDKIT_CA_PEM_B64",
    "BUILDKIT_CERT_PEM_B64",
    "BUILDKIT_KEY_PEM_B64",
];

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn deploy() -> PathBuf {
    repo().join("deploy")
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Every YAML document of a file, as JSON values (empty documents dropped).
fn yaml_docs(path: &Path) -> Vec<Value> {
    let text = read(path);
    serde_yaml_ng::Deserializer::from_str(&text)
        .map(|doc| Value::deserialize(doc).unwrap_or_else(|e| panic!("{}: {e}", path.display())))
        .filter(|v| !v.is_null())
        .collect()
}

fn yaml_doc(path: &Path) -> Value {
    let mut docs = yaml_docs(path);
    assert_eq!(docs.len(), 1, "{}: one document expected", path.display());
    docs.remove(0)
}

// ---------------------------------------------------------------------------------------------
// The kustomize subset: resources, namespace, labels, commonLabels, patches (strategic merge by
// kind and name) and configMapGenerator with files. Anything else is refused, so a manifest
// change that needs more of kustomize fails here instead of being rendered wrongly.

fn render(dir: &Path) -> Vec<Value> {
    render_with(dir, &[])
}

/// Renders the kustomization in `dir`, applying `extra_patches` (paths relative to `dir`) after
/// its own patches, as if they were listed there.
fn render_with(dir: &Path, extra_patches: &[&str]) -> Vec<Value> {
    let k = yaml_doc(&dir.join("kustomization.yaml"));
    let k = k.as_object().expect("kustomization is a map");
    for key in k.keys() {
        assert!(
            [
                "apiVersion",
                "kind",
                "resources",
                "namespace",
                "labels",
                "commonLabels",
                "patches",
                "configMapGenerator",
            ]
            .contains(&key.as_str()),
            "{}: `{key}` is outside the kustomize subset the deploy tests render",
            dir.display()
        );
    }
    let list = |key: &str| -> Vec<Value> {
        match k.get(key) {
            None | Some(Value::Null) => Vec::new(),
            Some(Value::Array(items)) => items.clone(),
            Some(other) => panic!("{}: `{key}` is not a list: {other}", dir.display()),
        }
    };

    let mut objects = Vec::new();
    for resource in list("resources") {
        let path = dir.join(resource.as_str().expect("resource is a path"));
        if path.is_dir() {
            objects.extend(render(&path));
        } else {
            objects.extend(yaml_docs(&path));
        }
    }
    for generator in list("configMapGenerator") {
        objects.push(generate_config_map(dir, &generator));
    }
    let mut patches: Vec<PathBuf> = list("patches")
        .iter()
        .map(|p| {
            let keys: Vec<&String> = p.as_object().expect("patch is a map").keys().collect();
            assert_eq!(keys, ["path"], "only `patches: - path: FILE` is supported");
            dir.join(p["path"].as_str().unwrap())
        })
        .collect();
    patches.extend(extra_patches.iter().map(|p| dir.join(p)));
    for path in patches {
        let patch = yaml_doc(&path);
        let (kind, name) = (&patch["kind"], &patch["metadata"]["name"]);
        let mut targets = objects
            .iter_mut()
            .filter(|o| &o["kind"] == kind && &o["metadata"]["name"] == name);
        let target = targets
            .next()
            .unwrap_or_else(|| panic!("{}: no {kind} {name} to patch", path.display()));
        strategic_merge(target, &patch);
        assert!(targets.next().is_none(), "{}: two targets", path.display());
    }
    if let Some(namespace) = k.get("namespace") {
        for o in &mut objects {
            o["metadata"]["namespace"] = namespace.clone();
        }
    }
    for entry in list("labels") {
        let entry = entry.as_object().expect("labels entry is a map");
        for key in entry.keys() {
            assert!(
                ["pairs", "includeSelectors", "includeTemplates"].contains(&key.as_str()),
                "labels.{key} is not supported"
            );
        }
        assert_ne!(
            entry.get("includeSelectors"),
            Some(&Value::Bool(true)),
            "labels with includeSelectors: use commonLabels"
        );
        let templates = entry.get("includeTemplates") == Some(&Value::Bool(true));
        for o in &mut objects {
            add_labels(&mut o["metadata"], &entry["pairs"]);
            if templates && o["spec"]["template"].is_object() {
                add_labels(&mut o["spec"]["template"]["metadata"], &entry["pairs"]);
            }
        }
    }
    if let Some(pairs) = k.get("commonLabels") {
        for o in &mut objects {
            add_labels(&mut o["metadata"], pairs);
            let kind = o["kind"].as_str().unwrap_or_default().to_string();
            let spec = &mut o["spec"];
            match kind.as_str() {
                "Service" => merge_map(&mut spec["selector"], pairs),
                "Deployment" | "StatefulSet" | "DaemonSet" | "PodDisruptionBudget" => {
                    merge_map(&mut spec["selector"]["matchLabels"], pairs)
                }
                "NetworkPolicy" => merge_map(&mut spec["podSelector"]["matchLabels"], pairs),
                _ => {}
            }
            if spec["template"].is_object() {
                add_labels(&mut spec["template"]["metadata"], pairs);
            }
        }
    }
    objects
}

fn add_labels(metadata: &mut Value, pairs: &Value) {
    merge_map(&mut metadata["labels"], pairs);
}

fn merge_map(target: &mut Value, pairs: &Value) {
    if !target.is_object() {
        *target = json!({});
    }
    for (k, v) in pairs.as_object().expect("label pairs are a map") {
        target[k] = v.clone();
    }
}

fn generate_config_map(dir: &Path, generator: &Value) -> Value {
    let g = generator
        .as_object()
        .expect("configMapGenerator entry is a map");
    for key in g.keys() {
        assert!(
            ["name", "files", "options"].contains(&key.as_str()),
            "configMapGenerator.{key} is not supported"
        );
    }
    // Hash suffixes (and rewriting the references to them) are outside the subset.
    assert_eq!(
        g.get("options").map(|o| &o["disableNameSuffixHash"]),
        Some(&Value::Bool(true)),
        "configMapGenerator needs options.disableNameSuffixHash: true"
    );
    let mut data = Map::new();
    for file in g["files"].as_array().expect("files is a list") {
        let file = file.as_str().unwrap();
        let (key, path) = match file.split_once('=') {
            Some((key, path)) => (key.to_string(), path),
            None => (file.rsplit('/').next().unwrap().to_string(), file),
        };
        let full = dir.join(path);
        assert!(
            full.canonicalize()
                .unwrap()
                .starts_with(dir.canonicalize().unwrap()),
            "{file}: kustomize only loads files under the kustomization's directory"
        );
        data.insert(key, Value::String(read(&full)));
    }
    json!({
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": { "name": g["name"] },
        "data": data,
    })
}

/// The merge key of a list field, as in the Kubernetes API's `patchMergeKey`s.
fn merge_key(field: &str) -> Option<&'static str> {
    match field {
        "containers" | "initContainers" | "volumes" | "env" | "imagePullSecrets" => Some("name"),
        "volumeMounts" => Some("mountPath"),
        "ports" => Some("containerPort"),
        _ => None,
    }
}

/// A strategic merge patch: maps merge, `null` deletes a key, lists with a merge key merge
/// item by item, other lists are replaced.
fn strategic_merge(target: &mut Value, patch: &Value) {
    let (Some(target), Some(patch)) = (target.as_object_mut(), patch.as_object()) else {
        panic!("strategic_merge works on maps");
    };
    for (key, value) in patch {
        assert!(
            !key.starts_with('$'),
            "patch directive {key} is not supported"
        );
        match (target.get_mut(key), value) {
            (_, Value::Null) => {
                target.remove(key);
            }
            (Some(t @ Value::Object(_)), Value::Object(_)) => strategic_merge(t, value),
            (Some(Value::Array(items)), Value::Array(patch_items)) => match merge_key(key) {
                Some(merge_key) => {
                    for p in patch_items {
                        let id = &p[merge_key];
                        assert!(!id.is_null(), "{key} item without {merge_key}");
                        match items.iter_mut().find(|i| &i[merge_key] == id) {
                            Some(item) => strategic_merge(item, p),
                            None => items.push(without_nulls(p)),
                        }
                    }
                }
                None => *target.get_mut(key).unwrap() = without_nulls(value),
            },
            _ => {
                target.insert(key.clone(), without_nulls(value));
            }
        }
    }
}

fn without_nulls(v: &Value) -> Value {
    match v {
        Value::Object(m) => Value::Object(
            m.iter()
                .filter(|(_, v)| !v.is_null())
                .map(|(k, v)| (k.clone(), without_nulls(v)))
                .collect(),
        ),
        Value::Array(items) => Value::Array(items.iter().map(without_nulls).collect()),
        other => other.clone(),
    }
}

#[test]
fn strategic_merge_follows_kubernetes_merge_keys() {
    let mut target = json!({"spec": {"containers": [
        {"name": "a", "args": ["x", "y"], "env": [{"name": "E", "value": "1"}],
         "probe": {"tcpSocket": {"port": 1}, "periodSeconds": 5}},
        {"name": "b"}
    ]}});
    strategic_merge(
        &mut target,
        &json!({"spec": {"containers": [
            {"name": "a", "args": ["z"], "env": [{"name": "E", "value": "2"}, {"name": "F", "value": "3"}],
             "probe": {"tcpSocket": null, "httpGet": {"path": "/healthz"}}},
            {"name": "c"}
        ]}}),
    );
    assert_eq!(
        target,
        json!({"spec": {"containers": [
            {"name": "a", "args": ["z"], "env": [{"name": "E", "value": "2"}, {"name": "F", "value": "3"}],
             "probe": {"httpGet": {"path": "/healthz"}, "periodSeconds": 5}},
            {"name": "b"},
            {"name": "c"}
        ]}})
    );
}

/// The renderer agrees with `kubectl kustomize` where kubectl is installed.
#[test]
fn renderer_matches_kubectl_kustomize_when_installed() {
    if Command::new("kubectl")
        .arg("version")
        .arg("--client")
        .output()
        .is_err()
    {
        println!("SKIP renderer_matches_kubectl_kustomize_when_installed: kubectl not installed");
        return;
    }
    for overlay in ["buildkit", "runner"] {
        let dir = deploy().join("overlays").join(overlay);
        let out = Command::new("kubectl")
            .arg("kustomize")
            .arg(&dir)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let text = String::from_utf8(out.stdout).unwrap();
        let theirs: BTreeMap<String, Value> = serde_yaml_ng::Deserializer::from_str(&text)
            .map(|d| Value::deserialize(d).unwrap())
            .map(|o| (identity(&o), o))
            .collect();
        let ours: BTreeMap<String, Value> = render(&dir)
            .into_iter()
            .map(|o| (identity(&o), o))
            .collect();
        assert_eq!(
            ours.keys().collect::<Vec<_>>(),
            theirs.keys().collect::<Vec<_>>()
        );
        for (id, object) in &ours {
            assert_eq!(
                sorted_lists(object),
                sorted_lists(&theirs[id]),
                "overlay {overlay}: {id} differs from kubectl kustomize"
            );
        }
    }
}

fn identity(o: &Value) -> String {
    format!(
        "{}/{}",
        o["kind"].as_str().unwrap(),
        o["metadata"]["name"].as_str().unwrap()
    )
}

/// Lists of named items in a canonical order (kustomize may order appended items differently).
fn sorted_lists(v: &Value) -> Value {
    match v {
        Value::Object(m) => Value::Object(
            m.iter()
                .map(|(k, v)| (k.clone(), sorted_lists(v)))
                .collect(),
        ),
        Value::Array(items) => {
            let mut items: Vec<Value> = items.iter().map(sorted_lists).collect();
            if items.iter().all(Value::is_object) {
                items.sort_by_key(|i| i.to_string());
            }
            Value::Array(items)
        }
        other => other.clone(),
    }
}

// ---------------------------------------------------------------------------------------------
// Invariants of the rendered overlays.

fn of_kind<'a>(objects: &'a [Value], kind: &str) -> Vec<&'a Value> {
    objects.iter().filter(|o| o["kind"] == kind).collect()
}

fn one<'a>(objects: &'a [Value], kind: &str) -> &'a Value {
    let found = of_kind(objects, kind);
    assert_eq!(found.len(), 1, "exactly one {kind}");
    found[0]
}

fn pod_spec(objects: &[Value]) -> &Value {
    let deployment = one(objects, "Deployment");
    assert_eq!(deployment["metadata"]["name"], "buildkitd");
    &deployment["spec"]["template"]["spec"]
}

fn main_container(objects: &[Value]) -> &Value {
    let containers = pod_spec(objects)["containers"].as_array().unwrap();
    assert_eq!(containers.len(), 1);
    &containers[0]
}

fn all_containers(objects: &[Value]) -> Vec<&Value> {
    let spec = pod_spec(objects);
    let mut all: Vec<&Value> = spec["containers"].as_array().unwrap().iter().collect();
    if let Some(init) = spec["initContainers"].as_array() {
        all.extend(init);
    }
    all
}

/// Every `key` anywhere in `v`, with its path.
fn find_key<'a>(v: &'a Value, key: &str, path: String, out: &mut Vec<(String, &'a Value)>) {
    match v {
        Value::Object(m) => {
            for (k, child) in m {
                let p = format!("{path}.{k}");
                if k == key {
                    out.push((p.clone(), child));
                }
                find_key(child, key, p, out);
            }
        }
        Value::Array(items) => {
            for (i, child) in items.iter().enumerate() {
                find_key(child, key, format!("{path}[{i}]"), out);
            }
        }
        _ => {}
    }
}

fn check_invariants(overlay: &str, objects: &[Value]) {
    for o in objects {
        assert_eq!(
            o["metadata"]["namespace"],
            "gitea",
            "{overlay}: {} outside gitea",
            identity(o)
        );
        assert_eq!(o["metadata"]["labels"]["app.kubernetes.io/part-of"], "kiln");
    }

    // Inside the cluster only, on 1235.
    for service in of_kind(objects, "Service") {
        assert_eq!(
            service["spec"]["type"],
            "ClusterIP",
            "{overlay}: {}",
            identity(service)
        );
        let ports: Vec<&Value> = service["spec"]["ports"]
            .as_array()
            .unwrap()
            .iter()
            .collect();
        assert_eq!(ports.len(), 1, "{overlay}: one port");
        assert_eq!(ports[0]["port"], 1235);
    }
    let service = one(objects, "Service");
    assert_eq!(service["metadata"]["name"], "buildkitd");
    let pod_labels = &one(objects, "Deployment")["spec"]["template"]["metadata"]["labels"];
    for (k, v) in service["spec"]["selector"].as_object().unwrap() {
        assert_eq!(
            &pod_labels[k], v,
            "{overlay}: the Service selects the builder pods"
        );
    }
    let container = main_container(objects);
    let port = container["ports"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == service["spec"]["ports"][0]["targetPort"])
        .expect("the Service's targetPort names a container port");
    assert_eq!(port["containerPort"], 1235);

    // Rootless: UID/GID 1000, non-root, never privileged, no added capabilities.
    let pod = pod_spec(objects);
    let security = &pod["securityContext"];
    assert_eq!(security["runAsUser"], 1000, "{overlay}");
    assert_eq!(security["runAsGroup"], 1000, "{overlay}");
    assert_eq!(security["runAsNonRoot"], true, "{overlay}");
    for c in all_containers(objects) {
        let s = &c["securityContext"];
        assert!(
            s["runAsUser"].is_null() || s["runAsUser"] == 1000,
            "{overlay}: {}",
            c["name"]
        );
        assert_ne!(s["runAsNonRoot"], false, "{overlay}: {}", c["name"]);
        assert!(
            s["capabilities"]["add"].is_null(),
            "{overlay}: {} adds capabilities",
            c["name"]
        );
    }
    for o in objects {
        let mut found = Vec::new();
        find_key(o, "privileged", identity(o), &mut found);
        for (path, value) in found {
            assert_eq!(value, &Value::Bool(false), "{overlay}: {path}");
        }
        for key in ["hostNetwork", "hostPID", "hostIPC", "hostPath"] {
            let mut found = Vec::new();
            find_key(o, key, identity(o), &mut found);
            for (path, value) in found {
                assert!(value == &Value::Bool(false), "{overlay}: {path}");
            }
        }
    }

    // Probes with exactly one handler each, resources, a size-limited cache.
    for probe in ["readinessProbe", "livenessProbe"] {
        let p = container[probe]
            .as_object()
            .unwrap_or_else(|| panic!("{overlay}: {probe}"));
        let handlers: Vec<&String> = p
            .keys()
            .filter(|k| ["exec", "httpGet", "tcpSocket", "grpc"].contains(&k.as_str()))
            .collect();
        assert_eq!(handlers.len(), 1, "{overlay}: {probe} has {handlers:?}");
    }
    for kind in ["requests", "limits"] {
        for resource in ["cpu", "memory"] {
            assert!(
                container["resources"][kind][resource].is_string(),
                "{overlay}: {kind}.{resource}"
            );
        }
    }
    let volumes = pod["volumes"].as_array().unwrap();
    for v in volumes.iter().filter(|v| v["emptyDir"].is_object()) {
        assert!(
            v["emptyDir"]["sizeLimit"].is_string(),
            "{overlay}: emptyDir {} has a sizeLimit",
            v["name"]
        );
    }
    let cache_mount = container["volumeMounts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["mountPath"] == "/var/lib/kiln")
        .expect("the state dir is a volume");
    let cache = volumes
        .iter()
        .find(|v| v["name"] == cache_mount["name"])
        .unwrap();
    assert!(cache["emptyDir"]["sizeLimit"].is_string());

    // A disruption budget and a network policy for the same pods.
    let pdb = one(objects, "PodDisruptionBudget");
    for (k, v) in pdb["spec"]["selector"]["matchLabels"].as_object().unwrap() {
        assert_eq!(
            &pod_labels[k], v,
            "{overlay}: the PDB selects the builder pods"
        );
    }
    let policy = one(objects, "NetworkPolicy");
    for (k, v) in policy["spec"]["podSelector"]["matchLabels"]
        .as_object()
        .unwrap()
    {
        assert_eq!(
            &pod_labels[k], v,
            "{overlay}: the NetworkPolicy selects the builder pods"
        );
    }
    assert_eq!(policy["spec"]["policyTypes"], json!(["Ingress"]));
    assert_eq!(
        policy["spec"]["ingress"],
        json!([{
            "from": [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "gitea"}}}],
            "ports": [{"protocol": "TCP", "port": 1235}]
        }]),
        "{overlay}: only namespace gitea, only 1235"
    );

    // The five keys synced by the InfisicalSecret; the server's three consumed by kiln.
    let infisical = one(objects, "InfisicalSecret");
    let managed = &infisical["spec"]["managedSecretReference"];
    assert_eq!(managed["secretNamespace"], "gitea");
    let secret = managed["secretName"].as_str().unwrap();
    let mapped = managed["template"]["data"].as_object().unwrap();
    assert_eq!(
        mapped.keys().map(String::as_str).collect::<BTreeSet<_>>(),
        SECRET_KEYS.into_iter().collect::<BTreeSet<_>>(),
        "{overlay}: the InfisicalSecret maps exactly the five keys"
    );
    for key in SECRET_KEYS {
        assert_eq!(mapped[key], format!("{{{{ .{key}.Value }}}}"));
    }
    for key in SERVER_KEYS {
        assert!(
            container["env"]
                .as_array()
                .unwrap()
                .iter()
                .any(|e| e["name"] == key
                    && e["valueFrom"]["secretKeyRef"] == json!({"name": secret, "key": key})),
            "{overlay}: kiln gets {key} from the Secret {secret}"
        );
    }
    // Every Secret reference names a key the InfisicalSecret syncs (or the runner's token).
    let mut refs = Vec::new();
    for o in objects {
        find_key(o, "secretKeyRef", identity(o), &mut refs);
    }
    for (path, r) in refs {
        if r["name"] == secret {
            assert!(
                SECRET_KEYS.contains(&r["key"].as_str().unwrap()),
                "{overlay}: {path}"
            );
        } else {
            assert_eq!(
                r,
                &json!({"name": "kiln-runner-registration", "key": "token"}),
                "{path}"
            );
        }
    }
    let deployment = one(objects, "Deployment");
    assert_eq!(
        deployment["metadata"]["annotations"]["secrets.infisical.com/auto-reload"], "true",
        "{overlay}: a rotated Secret rolls the pods"
    );
}

#[test]
fn buildkit_overlay_is_the_seed_service() {
    let objects = render(&deploy().join("overlays/buildkit"));
    check_invariants("buildkit", &objects);
    let container = main_container(&objects);
    assert_eq!(
        container["args"],
        json!([
            "buildkitd",
            "--addr",
            "tcp://0.0.0.0:1235",
            "--addr",
            "unix:///run/kiln/buildkit.sock",
            "--tls-from-env",
            "--health-addr",
            "0.0.0.0:8081"
        ])
    );
    // Probes on kiln's plain-HTTP health port: the mTLS port needs a client certificate.
    assert_eq!(
        container["readinessProbe"]["httpGet"],
        json!({"path": "/readyz", "port": "health"})
    );
    assert_eq!(
        container["livenessProbe"]["httpGet"],
        json!({"path": "/healthz", "port": "health"})
    );
    validate_all("buildkit", &objects);
}

#[test]
fn buildkit_overlay_with_cert_files_decodes_all_five_keys() {
    let objects = render_with(&deploy().join("overlays/buildkit"), &["cert-files.yaml"]);
    check_invariants("buildkit+cert-files", &objects);
    let pod = pod_spec(&objects);
    let init = &pod["initContainers"][0];
    assert_eq!(
        init["envFrom"],
        json!([{"secretRef": {"name": "buildkit-certs"}}])
    );
    let script = init["command"][2].as_str().unwrap();
    for key in SECRET_KEYS {
        assert!(
            script.contains(&format!("\"${key}\" | base64 -d > /certs/")),
            "{key} decoded"
        );
    }
    let args: Vec<&str> = main_container(&objects)["args"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap())
        .collect();
    assert!(!args.contains(&"--tls-from-env"));
    for flag in ["--tlscacert", "--tlscert", "--tlskey"] {
        assert!(args.contains(&flag), "{flag} in {args:?}");
    }
    validate_all("buildkit+cert-files", &objects);
}

#[test]
fn runner_overlay_registers_and_serves_the_same_endpoint() {
    let objects = render(&deploy().join("overlays/runner"));
    check_invariants("runner", &objects);
    let container = main_container(&objects);
    assert_eq!(container["args"], json!(["daemon"]));
    assert_eq!(
        container["readinessProbe"]["httpGet"],
        json!({"path": "/readyz", "port": "metrics"})
    );
    assert_eq!(
        container["livenessProbe"]["httpGet"],
        json!({"path": "/healthz", "port": "metrics"})
    );
    assert!(container["ports"]
        .as_array()
        .unwrap()
        .iter()
        .any(|p| p["containerPort"] == 9101));

    let register = &pod_spec(&objects)["initContainers"][0];
    assert_eq!(register["name"], "register");
    assert!(register["command"][2]
        .as_str()
        .unwrap()
        .contains("kiln register --no-interactive"));

    // The generated ConfigMap holds a config the daemon accepts, with the pod's settings.
    let config_map = of_kind(&objects, "ConfigMap")
        .into_iter()
        .find(|c| c["metadata"]["name"] == "kiln-runner-config")
        .expect("the runner's ConfigMap");
    let text = config_map["data"]["config.yaml"].as_str().unwrap();
    let (config, warnings) = kiln_runner::config::Config::parse("config.yaml", text).unwrap();
    assert!(warnings.is_empty(), "{warnings:?}");
    assert_eq!(config.kiln.metrics_addr, "0.0.0.0:9101");
    assert_eq!(config.kiln.buildkit.listen, ["tcp://0.0.0.0:1235"]);
    assert!(config.kiln.buildkit.tls_from_env);
    assert_eq!(config.runner.file, Path::new("/var/lib/kiln/.runner"));
    validate_all("runner", &objects);
}

/// The runner's config.yaml is the example with only the changes a pod needs.
#[test]
fn runner_config_differs_from_the_example_only_where_a_pod_needs_it() {
    let flat = |path: &Path| {
        let mut out = BTreeMap::new();
        flatten(&yaml_doc(path), String::new(), &mut out);
        out
    };
    let example = flat(&repo().join("runner-config/config.example.yaml"));
    let pod = flat(&deploy().join("overlays/runner/config.yaml"));
    let changed: BTreeSet<&String> = example
        .keys()
        .chain(pod.keys())
        .filter(|k| example.get(*k) != pod.get(*k))
        .collect();
    let allowed: BTreeSet<String> = [
        "runner.file",
        "runner.envs.A_TEST_ENV_NAME_1",
        "runner.envs",
        "runner.shutdown_timeout",
        "runner.labels[0]",
        "runner.labels[1]",
        "runner.labels[2]",
        "kiln.state_dir",
        "kiln.metrics_addr",
        "kiln.buildkit.listen",
        "kiln.buildkit.listen[0]",
        "kiln.buildkit.tls_from_env",
    ]
    .into_iter()
    .map(String::from)
    .collect();
    let unexpected: Vec<&&String> = changed.iter().filter(|k| !allowed.contains(**k)).collect();
    assert!(
        unexpected.is_empty(),
        "changed beyond the pod's needs: {unexpected:?}"
    );
}

fn flatten(v: &Value, path: String, out: &mut BTreeMap<String, Value>) {
    let join = |k: &str| {
        if path.is_empty() {
            k.to_string()
        } else {
            format!("{path}.{k}")
        }
    };
    match v {
        Value::Object(m) if !m.is_empty() => {
            for (k, child) in m {
                flatten(child, join(k), out);
            }
        }
        Value::Array(items) if !items.is_empty() => {
            for (i, child) in items.iter().enumerate() {
                flatten(child, format!("{path}[{i}]"), out);
            }
        }
        leaf => {
            out.insert(path, leaf.clone());
        }
    }
}

/// Each relaxation of the pod's security is explained by a comment right above it.
#[test]
fn every_security_relaxation_is_explained() {
    let text = read(&deploy().join("base/deployment.yaml"));
    let lines: Vec<&str> = text.lines().collect();
    for relaxed in [
        "seccompProfile:",
        "appArmorProfile:",
        "allowPrivilegeEscalation: true",
    ] {
        let at = lines
            .iter()
            .position(|l| l.trim() == relaxed)
            .unwrap_or_else(|| panic!("{relaxed} in base/deployment.yaml"));
        let comment: Vec<&str> = lines[..at]
            .iter()
            .rev()
            .take_while(|l| l.trim_start().starts_with('#'))
            .copied()
            .collect();
        assert!(
            comment.iter().any(|l| l.contains("RELAXATION:")),
            "{relaxed} needs a `# RELAXATION:` comment above it"
        );
    }
}

/// The builder's kiln.toml keeps the cache below the cache volume's size limit.
#[test]
fn builder_cache_cap_fits_the_cache_volume() {
    let config: toml::Table = read(&deploy().join("base/kiln.toml")).parse().unwrap();
    for key in config.keys() {
        assert!(
            [
                "root",
                "registry",
                "runc",
                "max_parallelism",
                "snapshotter",
                "gc_keep_storage"
            ]
            .contains(&key.as_str()),
            "kiln.toml: unknown key {key}"
        );
    }
    let keep = size(config["gc_keep_storage"].as_str().unwrap());
    let objects = render(&deploy().join("overlays/buildkit"));
    let limit = pod_spec(&objects)["volumes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["name"] == "cache")
        .map(|v| size(v["emptyDir"]["sizeLimit"].as_str().unwrap()))
        .unwrap();
    assert!(
        keep * 10 <= limit * 8,
        "gc_keep_storage {keep} leaves under 20% of {limit} free"
    );
}

fn size(s: &str) -> u64 {
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (n, unit) = s.split_at(split);
    let n: u64 = n.parse().unwrap();
    n * match unit {
        "" => 1,
        "GB" => 1_000_000_000,
        "Gi" | "GiB" => 1 << 30,
        "MB" => 1_000_000,
        "Mi" | "MiB" => 1 << 20,
        other => panic!("unit {other}"),
    }
}

// ---------------------------------------------------------------------------------------------
// Schema validation.

/// Built-in kinds go to `kubernetes-validate` (Kubernetes 1.30, strict) when it is installed;
/// the InfisicalSecret goes to the schema kept in the repository.
fn validate_all(overlay: &str, objects: &[Value]) {
    let schema: Value =
        serde_json::from_str(&read(&deploy().join("schemas/infisicalsecret.json"))).unwrap();
    let mut builtin = Vec::new();
    for o in objects {
        if o["apiVersion"] == "secrets.infisical.com/v1alpha1" {
            let errors = check_schema(&schema, o, "$");
            assert!(errors.is_empty(), "{overlay}: {}: {errors:#?}", identity(o));
        } else {
            builtin.push(o.clone());
        }
    }
    kubernetes_validate(overlay, &builtin);
}

fn kubernetes_validate(what: &str, objects: &[Value]) {
    if Command::new("kubernetes-validate")
        .arg("--version")
        .output()
        .is_err()
    {
        println!("SKIP {what}: Kubernetes schema validation, kubernetes-validate not installed");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let files: Vec<PathBuf> = objects
        .iter()
        .enumerate()
        .map(|(i, o)| {
            let path = dir
                .path()
                .join(format!("{i}-{}.json", identity(o).replace('/', "-")));
            std::fs::write(&path, serde_json::to_vec_pretty(o).unwrap()).unwrap();
            path
        })
        .collect();
    let out = Command::new("kubernetes-validate")
        .args(["--kubernetes-version", "1.30.0", "--strict", "--quiet"])
        .args(&files)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{what}: kubernetes-validate (1.30, strict) failed:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    println!(
        "{what}: {} objects valid for Kubernetes 1.30 (strict)",
        files.len()
    );
}

/// The JSON-schema keywords `deploy/schemas/*.json` use: type, enum, required, properties,
/// additionalProperties (false or a schema), minLength, minimum.
fn check_schema(schema: &Value, v: &Value, path: &str) -> Vec<String> {
    let mut errors = Vec::new();
    for key in schema.as_object().unwrap().keys() {
        assert!(
            [
                "$schema",
                "$comment",
                "type",
                "enum",
                "required",
                "properties",
                "additionalProperties",
                "minLength",
                "minimum",
            ]
            .contains(&key.as_str()),
            "schema keyword {key} is not supported by the deploy tests"
        );
    }
    if let Some(t) = schema["type"].as_str() {
        let ok = match t {
            "object" => v.is_object(),
            "string" => v.is_string(),
            "integer" => v.is_i64() || v.is_u64(),
            "boolean" => v.is_boolean(),
            "array" => v.is_array(),
            other => panic!("type {other}"),
        };
        if !ok {
            errors.push(format!("{path}: expected {t}, got {v}"));
            return errors;
        }
    }
    if let Some(allowed) = schema["enum"].as_array() {
        if !allowed.contains(v) {
            errors.push(format!("{path}: {v} is not one of {allowed:?}"));
        }
    }
    if let (Some(min), Some(s)) = (schema["minLength"].as_u64(), v.as_str()) {
        if (s.chars().count() as u64) < min {
            errors.push(format!("{path}: shorter than {min}"));
        }
    }
    if let (Some(min), Some(n)) = (schema["minimum"].as_i64(), v.as_i64()) {
        if n < min {
            errors.push(format!("{path}: below {min}"));
        }
    }
    if let Some(m) = v.as_object() {
        for required in schema["required"].as_array().into_iter().flatten() {
            if !m.contains_key(required.as_str().unwrap()) {
                errors.push(format!("{path}: {required} is required"));
            }
        }
        for (k, child) in m {
            let child_path = format!("{path}.{k}");
            match (&schema["properties"][k], &schema["additionalProperties"]) {
                (s @ Value::Object(_), _) => errors.extend(check_schema(s, child, &child_path)),
                (_, Value::Bool(false)) => errors.push(format!("{child_path}: unknown field")),
                (_, s @ Value::Object(_)) => errors.extend(check_schema(s, child, &child_path)),
                _ => {}
            }
        }
    }
    errors
}

#[test]
fn infisicalsecret_schema_rejects_typos_and_missing_fields() {
    let schema: Value =
        serde_json::from_str(&read(&deploy().join("schemas/infisicalsecret.json"))).unwrap();
    let good = yaml_doc(&deploy().join("base/infisicalsecret.yaml"));
    assert_eq!(check_schema(&schema, &good, "$"), Vec::<String>::new());

    let mut typo = good.clone();
    typo["spec"]["resyncIntervall"] = json!(60);
    assert_eq!(
        check_schema(&schema, &typo, "$"),
        ["$.spec.resyncIntervall: unknown field"]
    );

    let mut missing = good.clone();
    missing["spec"]["authentication"]["universalAuth"]["secretsScope"]
        .as_object_mut()
        .unwrap()
        .remove("envSlug");
    assert_eq!(
        check_schema(&schema, &missing, "$"),
        ["$.spec.authentication.universalAuth.secretsScope: \"envSlug\" is required"]
    );

    let mut policy = good;
    policy["spec"]["managedSecretReference"]["creationPolicy"] = json!("Keep");
    assert_eq!(check_schema(&schema, &policy, "$").len(), 1);
}

// ---------------------------------------------------------------------------------------------
// Client-side examples.

#[test]
fn client_examples_reach_the_endpoint_with_client_certificates() {
    let examples = deploy().join("examples");
    let mut objects = yaml_docs(&examples.join("client-secret.yaml"));
    objects.extend(yaml_docs(&examples.join("client-configmap.yaml")));
    for o in &objects {
        assert_eq!(o["metadata"]["namespace"], "gitea");
    }
    let config = objects.iter().find(|o| o["kind"] == "ConfigMap").unwrap();
    assert_eq!(
        config["data"]["BUILDKIT_HOST"],
        "tcp://buildkitd.gitea.svc.cluster.local:1235"
    );
    kubernetes_validate("examples", &objects);

    let workflow = yaml_doc(&examples.join("workflow.yaml"));
    assert_eq!(
        workflow["env"]["BUILDKIT_HOST"],
        "tcp://buildkitd.gitea.svc.cluster.local:1235"
    );
    let mut runs = Vec::new();
    find_key(&workflow, "run", String::new(), &mut runs);
    let scripts: String = runs.iter().filter_map(|(_, r)| r.as_str()).collect();
    for needle in [
        "buildctl --addr \"$BUILDKIT_HOST\"",
        "--tlscacert \"$RUNNER_TEMP/certs/ca.pem\"",
        "--tlscert \"$RUNNER_TEMP/certs/cert.pem\"",
        "--tlskey \"$RUNNER_TEMP/certs/key.pem\"",
        "docker buildx create --name kiln --driver remote",
        "cacert=$RUNNER_TEMP/certs/ca.pem,cert=$RUNNER_TEMP/certs/cert.pem,key=$RUNNER_TEMP/certs/key.pem",
        "docker buildx build --builder kiln",
    ] {
        assert!(scripts.contains(needle), "the workflow runs {needle}");
    }
    for key in [
        "BUILDKIT_CA_PEM_B64",
        "BUILDKIT_CLIENT_CERT_PEM_B64",
        "BUILDKIT_CLIENT_KEY_PEM_B64",
    ] {
        assert!(read(&examples.join("workflow.yaml")).contains(&format!("secrets.{key}")));
    }
}
