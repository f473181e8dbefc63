//! What a job's images leave behind, and when it goes.
//!
//! A pulled image is `WORK/images/NAME/` (the rootfs, an overlay mount or a
//! flattened copy, plus its upper and work directories) and the layer
//! directories under `WORK/layers/` it names in `rootfs.layers`. After a
//! job (unless debug) its rootfs is unmounted and its image directory
//! removed. Its layer directories are removed too, except those of an
//! image whose reference a later job of the workflow names again: that job
//! finds them unpacked. A layer shared by two *different* references is
//! kept only if one of them is named again; the rest are unpacked anew.
//! Whatever is left when the workflow ends is removed with `WORK/layers`.

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use super::schema::Workflow;

/// The image references of the jobs after `id`, services included.
pub fn images_after<'a>(wf: &'a Workflow, id: &str) -> HashSet<&'a str> {
    wf.jobs
        .0
        .iter()
        .skip_while(|(name, _)| name.as_str() != id)
        .skip(1)
        .flat_map(|(_, job)| {
            std::iter::once(job.container.image.as_str())
                .chain(job.services.0.values().map(|s| s.image.as_str()))
        })
        .collect()
}

/// The layer directories to delete: those the job's images used, minus
/// those of an image named again later.
fn layers_to_delete(used: &[(&str, Vec<PathBuf>)], later: &HashSet<&str>) -> Vec<PathBuf> {
    let keep: HashSet<&PathBuf> = used
        .iter()
        .filter(|(image, _)| later.contains(image))
        .flat_map(|(_, layers)| layers)
        .collect();
    let mut delete: Vec<PathBuf> = Vec::new();
    for layer in used.iter().flat_map(|(_, layers)| layers) {
        if !keep.contains(layer) && !delete.contains(layer) {
            delete.push(layer.clone());
        }
    }
    delete
}

/// Releases the images of one job: `(NAME, IMAGE)` pairs.
pub fn release(images_dir: &Path, job_images: &[(String, &str)], later: &HashSet<&str>) {
    let mut used = Vec::new();
    for (name, image) in job_images {
        let dir = images_dir.join(name);
        let rootfs = dir.join("rootfs");
        used.push((*image, crate::image::read_layer_list(&rootfs)));
        unmount(&rootfs);
        if let Err(err) = std::fs::remove_dir_all(&dir) {
            if err.kind() != std::io::ErrorKind::NotFound {
                tracing::warn!(dir = %dir.display(), %err, "image directory not removed");
            }
        }
    }
    let layers_dir = images_dir.with_file_name("layers");
    for layer in layers_to_delete(&used, later) {
        if !crate::image::overlay::is_layer_dir(&layers_dir, &layer) {
            tracing::warn!(dir = %layer.display(), "not a layer directory of this boot: not removed");
            continue;
        }
        if let Err(err) = std::fs::remove_dir_all(&layer) {
            tracing::warn!(dir = %layer.display(), %err, "layer directory not removed");
        }
    }
}

/// Unmounts an overlay rootfs; a flattened one is not a mount (EINVAL).
fn unmount(rootfs: &Path) {
    use nix::errno::Errno;
    use nix::mount::{umount2, MntFlags};
    match umount2(rootfs, MntFlags::empty()) {
        Ok(()) | Err(Errno::EINVAL | Errno::ENOENT) => {}
        Err(err) => {
            tracing::warn!(rootfs = %rootfs.display(), %err, "rootfs busy: detaching it");
            if let Err(err) = umount2(rootfs, MntFlags::MNT_DETACH) {
                tracing::warn!(rootfs = %rootfs.display(), %err, "rootfs not unmounted");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(used: &[(&str, &[&str])], later: &[&str], expected: &[&str]) {
        let used: Vec<(&str, Vec<PathBuf>)> =
            used.iter().map(|(i, l)| (*i, l.iter().map(PathBuf::from).collect())).collect();
        let later: HashSet<&str> = later.iter().copied().collect();
        let expected: Vec<PathBuf> = expected.iter().map(PathBuf::from).collect();
        assert_eq!(layers_to_delete(&used, &later), expected, "{used:?} later {later:?}");
    }

    #[test]
    fn layers_named_again_later_are_kept() {
        check(&[("a", &["/l/base", "/l/a"])], &[], &["/l/base", "/l/a"]);
        check(&[("a", &["/l/base", "/l/a"])], &["a"], &[]);
        // A service and the job's container share the base: deleted once.
        check(&[("a", &["/l/base", "/l/a"]), ("svc", &["/l/base", "/l/s"])], &["b"], &["/l/base", "/l/a", "/l/s"]);
        // The service's image comes back later: its base stays, a's own layer goes.
        check(&[("a", &["/l/base", "/l/a"]), ("svc", &["/l/base", "/l/s"])], &["svc"], &["/l/a"]);
        // A flattened rootfs names no layers.
        check(&[("a", &[])], &[], &[]);
    }

    #[test]
    fn images_of_later_jobs() {
        let wf: Workflow = serde_yaml::from_str(
            "name: w\njobs:\n  one:\n    container: {image: a}\n  two:\n    container: {image: b}\n    services:\n      db: {image: c}\n  three:\n    container: {image: a}\n",
        )
        .unwrap();
        let sorted = |set: HashSet<&str>| {
            let mut v: Vec<String> = set.into_iter().map(String::from).collect();
            v.sort_unstable();
            v
        };
        assert_eq!(sorted(images_after(&wf, "one")), ["a", "b", "c"]);
        assert_eq!(sorted(images_after(&wf, "two")), ["a"]);
        assert!(images_after(&wf, "three").is_empty());
    }
}
