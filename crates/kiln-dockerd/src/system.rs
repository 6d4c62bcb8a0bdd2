//! `_ping`, `version` and `info`: what the CLI asks before anything else.

use crate::{Shared, API_VERSION, MIN_API_VERSION};
use axum::http::{header, HeaderValue, Method};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::json;

pub const VERSION: &str = concat!("kiln-", env!("CARGO_PKG_VERSION"));

/// Docker's `GOARCH` names (`amd64`, `arm64`) and `GOOS`.
fn os_arch() -> (String, String) {
    let p = kiln_oci::Platform::host();
    (p.os, p.architecture)
}

pub fn ping(method: &Method) -> Response {
    let body = if *method == Method::HEAD { "" } else { "OK" };
    let mut r = body.into_response();
    let h = r.headers_mut();
    h.insert("API-Version", HeaderValue::from_static(API_VERSION));
    h.insert("Docker-Experimental", HeaderValue::from_static("false"));
    h.insert("Ostype", HeaderValue::from_static("linux"));
    // "1": the legacy builder, which sends the context as a tar; BuildKit mode needs /session.
    h.insert("Builder-Version", HeaderValue::from_static("1"));
    h.insert(
        "Cache-Control",
        HeaderValue::from_static("no-cache, no-store, must-revalidate"),
    );
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    r
}

pub fn version() -> Response {
    let (os, arch) = os_arch();
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|s| s.trim().to_string())
        .unwrap_or_default();
    Json(json!({
        "Platform": {"Name": "kiln"},
        "Components": [{
            "Name": "Engine",
            "Version": VERSION,
            "Details": {
                "ApiVersion": API_VERSION,
                "MinAPIVersion": MIN_API_VERSION,
                "Os": os,
                "Arch": arch,
                "KernelVersion": kernel,
                "Experimental": "false",
            },
        }],
        "Version": VERSION,
        "ApiVersion": API_VERSION,
        "MinAPIVersion": MIN_API_VERSION,
        "GitCommit": option_env!("KILN_GIT_REVISION").unwrap_or(""),
        "GoVersion": "",
        "Os": os,
        "Arch": arch,
        "KernelVersion": kernel,
        "Experimental": false,
        "BuildTime": "",
    }))
    .into_response()
}

pub fn info(api: &Shared) -> Response {
    let (os, arch) = os_arch();
    let hostname = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_string())
        .unwrap_or_default();
    let ncpu = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1);
    let images = api.store.list().len();
    let root = api.engine.inner().root.display().to_string();
    Json(json!({
        "ID": "kiln",
        "Containers": 0,
        "ContainersRunning": 0,
        "ContainersPaused": 0,
        "ContainersStopped": 0,
        "Images": images,
        "Driver": "kiln",
        "DriverStatus": [],
        "Plugins": {"Volume": [], "Network": [], "Authorization": null, "Log": []},
        "MemoryLimit": false,
        "SwapLimit": false,
        "CpuCfsPeriod": false,
        "CpuCfsQuota": false,
        "CPUShares": false,
        "CPUSet": false,
        "PidsLimit": false,
        "IPv4Forwarding": false,
        "BridgeNfIptables": false,
        "BridgeNfIp6tables": false,
        "Debug": false,
        "NFd": 0,
        "OomKillDisable": false,
        "NGoroutines": 0,
        "SystemTime": "",
        "LoggingDriver": "",
        "CgroupDriver": "none",
        "CgroupVersion": "2",
        "NEventsListener": 0,
        "KernelVersion": std::fs::read_to_string("/proc/sys/kernel/osrelease").map(|s| s.trim().to_string()).unwrap_or_default(),
        "OperatingSystem": "kiln",
        "OSVersion": "",
        "OSType": os,
        "Architecture": arch,
        "IndexServerAddress": "https://index.docker.io/v1/",
        "RegistryConfig": {"AllowNondistributableArtifactsCIDRs": [], "AllowNondistributableArtifactsHostnames": [], "InsecureRegistryCIDRs": ["127.0.0.0/8"], "IndexConfigs": {}, "Mirrors": []},
        "NCPU": ncpu,
        "MemTotal": 0,
        "GenericResources": null,
        "DockerRootDir": root,
        "HttpProxy": "",
        "HttpsProxy": "",
        "NoProxy": "",
        "Name": hostname,
        "Labels": [],
        "ExperimentalBuild": false,
        "ServerVersion": VERSION,
        "Runtimes": {},
        "DefaultRuntime": "",
        "Swarm": {"NodeID": "", "NodeAddr": "", "LocalNodeState": "inactive", "ControlAvailable": false, "Error": "", "RemoteManagers": null},
        "LiveRestoreEnabled": false,
        "Isolation": "",
        "InitBinary": "",
        "ContainerdCommit": {"ID": ""},
        "RuncCommit": {"ID": ""},
        "InitCommit": {"ID": ""},
        "SecurityOptions": [],
        "Warnings": ["kiln serves only image builds, image management and login: containers cannot be run"],
    }))
    .into_response()
}
