//! Finding the pod UID and container ID of a process from `/proc/<pid>/cgroup`.
//!
//! Kubernetes puts every container in a cgroup below its pod's cgroup, whatever the
//! runtime or cgroup driver, so the path always holds a `pod<uid>` component followed by a
//! component naming the container:
//!
//! - cgroupfs driver (v1 or v2): `/kubepods/burstable/pod<uid>/<id>`
//! - systemd driver, containerd: `/kubepods.slice/kubepods-burstable.slice/
//!   kubepods-burstable-pod<uid_with_underscores>.slice/cri-containerd-<id>.scope`
//! - systemd driver, CRI-O: `…-pod<uid>.slice/crio-<id>.scope`
//! - systemd driver, Docker (dockershim / cri-dockerd): `…-pod<uid>.slice/docker-<id>.scope`
//! - nested (kind): `/docker/<node>/kubepods/…/pod<uid>/<id>` or the systemd form below it.
//!
//! The container component is the last one of the path; its runtime prefix (up to the last
//! `-` or `:`) and `.scope` suffix are dropped. The pod UID keeps its dashes (systemd slice
//! names have them as underscores). A process whose cgroups hold no such path (a host
//! process, or CRI-O's `crio-conmon-…` monitor) is not in a pod container.

use std::path::Path;

/// Where a process sits in Kubernetes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContainerRef {
    /// The pod UID (dashed form, as in `metadata.uid`).
    pub pod_uid: String,
    /// The container ID as in `containerStatuses[].containerID` after the `<runtime>://`.
    pub container_id: String,
}

/// Reads `<proc_root>/<pid>/cgroup` and locates the container. `Ok(None)`: not in a pod.
pub fn container_of_pid(proc_root: &Path, pid: i32) -> std::io::Result<Option<ContainerRef>> {
    let text = std::fs::read_to_string(proc_root.join(pid.to_string()).join("cgroup"))?;
    Ok(container_from_cgroup_file(&text))
}

/// Locates the container from the text of a `/proc/<pid>/cgroup` file (v1 lines
/// `N:controllers:/path`, or the v2 line `0::/path`). The first line naming a pod container
/// wins.
pub fn container_from_cgroup_file(text: &str) -> Option<ContainerRef> {
    text.lines().find_map(|line| {
        let mut parts = line.splitn(3, ':');
        let (_, _, path) = (parts.next()?, parts.next()?, parts.next()?);
        container_from_cgroup_path(path)
    })
}

/// Locates the container from one cgroup path.
pub fn container_from_cgroup_path(path: &str) -> Option<ContainerRef> {
    let components: Vec<&str> = path.split('/').filter(|c| !c.is_empty()).collect();
    let (last, rest) = components.split_last()?;
    let pod_component = rest.last()?;
    let pod_uid = pod_uid_of(pod_component)?;
    let container_id = container_id_of(last)?;
    Some(ContainerRef {
        pod_uid,
        container_id,
    })
}

/// `pod<uid>` or `…-pod<uid_underscored>.slice` → the dashed UID.
fn pod_uid_of(component: &str) -> Option<String> {
    let component = component.strip_suffix(".slice").unwrap_or(component);
    let idx = component.rfind("pod")?;
    // `pod` starts the component or follows a separator.
    if idx > 0 && !matches!(component.as_bytes()[idx - 1], b'-' | b'_' | b'.') {
        return None;
    }
    let uid = &component[idx + 3..];
    let uid = uid.replace('_', "-");
    let groups: Vec<&str> = uid.split('-').collect();
    let well_formed = match groups.as_slice() {
        [a, b, c, d, e] => {
            [a.len(), b.len(), c.len(), d.len(), e.len()] == [8, 4, 4, 4, 12]
                && uid.chars().all(|ch| ch == '-' || ch.is_ascii_hexdigit())
        }
        // Static pods: the UID is a 32-hex-digit config hash.
        [single] => single.len() == 32 && single.chars().all(|ch| ch.is_ascii_hexdigit()),
        _ => false,
    };
    well_formed.then_some(uid)
}

/// `<id>`, `cri-containerd-<id>.scope`, `crio-<id>.scope`, `docker-<id>.scope` → `<id>`.
fn container_id_of(component: &str) -> Option<String> {
    let component = component.strip_suffix(".scope").unwrap_or(component);
    if component.starts_with("crio-conmon-") {
        return None;
    }
    let id = component
        .rfind(['-', ':'])
        .map_or(component, |i| &component[i + 1..]);
    let valid = id.len() >= 12 && id.chars().all(|c| c.is_ascii_hexdigit());
    valid.then(|| id.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    const ID: &str = "9bca8d63d5fa610783847915bcff0ecac1273e5b4bed3f6fa1b07350e0135961";
    const UID: &str = "2c48913c-b29f-11e7-9350-020968147796";

    fn expect(text: &str) {
        assert_eq!(
            container_from_cgroup_file(text),
            Some(ContainerRef {
                pod_uid: UID.into(),
                container_id: ID.into()
            }),
            "{text}"
        );
    }

    #[test]
    fn cgroup_v1_cgroupfs_docker() {
        expect(&format!(
            "12:hugetlb:/kubepods/burstable/pod{UID}/{ID}\n11:devices:/kubepods/burstable/pod{UID}/{ID}\n1:name=systemd:/kubepods/burstable/pod{UID}/{ID}\n"
        ));
    }

    #[test]
    fn cgroup_v1_systemd_containerd() {
        let u = UID.replace('-', "_");
        expect(&format!(
            "10:memory:/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod{u}.slice/cri-containerd-{ID}.scope\n0::/\n"
        ));
    }

    #[test]
    fn cgroup_v2_systemd_containerd() {
        let u = UID.replace('-', "_");
        expect(&format!(
            "0::/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{u}.slice/cri-containerd-{ID}.scope\n"
        ));
    }

    #[test]
    fn cgroup_v2_guaranteed_systemd_crio() {
        let u = UID.replace('-', "_");
        expect(&format!(
            "0::/kubepods.slice/kubepods-pod{u}.slice/crio-{ID}.scope\n"
        ));
    }

    #[test]
    fn cgroup_v2_systemd_docker() {
        let u = UID.replace('-', "_");
        expect(&format!(
            "0::/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod{u}.slice/docker-{ID}.scope\n"
        ));
    }

    #[test]
    fn cgroup_v2_cgroupfs_containerd() {
        expect(&format!("0::/kubepods/besteffort/pod{UID}/{ID}\n"));
    }

    #[test]
    fn kind_nested_in_docker() {
        expect(&format!(
            "11:cpuset:/docker/93529524695bb00d91c1f6dba692ea8d3550c3b94fb2463af7bc9ec82f992d26/kubepods/besteffort/pod{UID}/{ID}\n"
        ));
        let u = UID.replace('-', "_");
        expect(&format!(
            "0::/system.slice/docker-93529524695bb00d91c1f6dba692ea8d3550c3b94fb2463af7bc9ec82f992d26.scope/kubelet.slice/kubelet-kubepods.slice/kubelet-kubepods-besteffort.slice/kubelet-kubepods-besteffort-pod{u}.slice/cri-containerd-{ID}.scope\n"
        ));
    }

    #[test]
    fn static_pod_hash_uid() {
        let hash = "ab7a73b1e3c24e1db5b0c8e4d5c1a9f0";
        assert_eq!(
            container_from_cgroup_path(&format!("/kubepods/burstable/pod{hash}/{ID}")),
            Some(ContainerRef {
                pod_uid: hash.into(),
                container_id: ID.into()
            })
        );
    }

    #[test]
    fn not_in_a_pod() {
        for text in [
            "0::/\n",
            "0::/user.slice/user-1000.slice/session-3.scope\n",
            "0::/system.slice/containerd.service\n",
            &format!("0::/system.slice/docker-{ID}.scope\n"),
            "12:pids:/kubepods/burstable/pod2c48913c-b29f-11e7-9350-020968147796\n",
            &format!("0::/kubepods/burstable/pod{UID}/crio-conmon-{ID}.scope\n"),
            &format!("0::/kubepods/burstable/notapod{UID}/{ID}\n"),
            "garbage\n",
            "",
        ] {
            assert_eq!(container_from_cgroup_file(text), None, "{text}");
        }
    }

    #[test]
    fn reads_proc_file() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("42")).unwrap();
        std::fs::write(
            dir.path().join("42/cgroup"),
            format!("0::/kubepods/besteffort/pod{UID}/{ID}\n"),
        )
        .unwrap();
        assert_eq!(
            container_of_pid(dir.path(), 42)
                .unwrap()
                .unwrap()
                .container_id,
            ID
        );
        assert!(container_of_pid(dir.path(), 43).is_err());
    }
}
