// Who a container is beyond its id, as its runtime's annotations say: its name and its
// Kubernetes pod, the labels of its ports' metrics.
//! Container labels.

use std::collections::BTreeMap;

use crate::ledger::ContainerLabels;

/// The pod's name (set by the kubelet through CRI-O or containerd).
pub const POD_NAME: &str = "io.kubernetes.pod.name";
/// The pod's namespace.
pub const POD_NAMESPACE: &str = "io.kubernetes.pod.namespace";
/// Where runtimes put the container's name, most specific first: containerd's CRI plugin,
/// CRI-O, nerdctl.
pub const CONTAINER_NAME: [&str; 3] =
    ["io.kubernetes.cri.container-name", "io.kubernetes.container.name", "nerdctl/name"];
/// The longest value taken (a Kubernetes name is at most 253 bytes).
pub const MAX_LEN: usize = 253;

/// The labels `ann` gives. A value that is empty, longer than [`MAX_LEN`] or holds a control
/// character is left out with a warning naming the annotation: labels never refuse a container.
pub fn of(ann: &BTreeMap<String, String>) -> ContainerLabels {
    let take = |key: &str| {
        let v = ann.get(key)?;
        if v.is_empty() || v.len() > MAX_LEN || v.chars().any(char::is_control) {
            tracing::warn!(
                "annotation {key}={v:?} is not used as a metrics label (1 to {MAX_LEN} bytes, no control characters)"
            );
            return None;
        }
        Some(v.clone())
    };
    ContainerLabels {
        name: CONTAINER_NAME.iter().find_map(|k| take(k)),
        pod_name: take(POD_NAME),
        pod_namespace: take(POD_NAMESPACE),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ann(kv: &[(&str, &str)]) -> BTreeMap<String, String> {
        kv.iter().map(|(k, v)| ((*k).to_string(), (*v).to_string())).collect()
    }

    #[test]
    fn pod_and_name_from_the_runtimes_annotations() {
        assert_eq!(of(&ann(&[("fastpath.io/cores", "1")])), ContainerLabels::default());
        let l = of(&ann(&[
            (POD_NAME, "web-0"),
            (POD_NAMESPACE, "shop"),
            ("io.kubernetes.container.name", "nginx"),
            ("nerdctl/name", "other"),
        ]));
        assert_eq!(
            l,
            ContainerLabels {
                name: Some("nginx".into()),
                pod_name: Some("web-0".into()),
                pod_namespace: Some("shop".into())
            }
        );
    }

    #[test]
    fn values_no_label_can_hold_are_left_out() {
        let long = "x".repeat(MAX_LEN + 1);
        let l = of(&ann(&[(POD_NAME, ""), (POD_NAMESPACE, &long), ("nerdctl/name", "a\nb")]));
        assert_eq!(l, ContainerLabels::default());
        assert_eq!(of(&ann(&[(POD_NAME, "a \"b\" \\c")])).pod_name.as_deref(), Some("a \"b\" \\c"));
    }
}
