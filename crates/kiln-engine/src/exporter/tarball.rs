//! Built images written as OCI or Docker tarballs.

use super::*;

impl Engine {
    /// Write an OCI image layout tar (`docker_compat` adds Docker's `manifest.json`, so that
    /// `docker load` accepts it).
    pub fn write_image_tar(
        &self,
        image: &BuiltImage,
        names: &[String],
        docker_compat: bool,
        out: &mut dyn Write,
    ) -> Result<(), SolveError> {
        self.write_built_tar(&Built::Image(image.clone()), names, docker_compat, out)
    }

    /// [`Engine::write_image_tar`] for an image or an index. Docker's `manifest.json` has no
    /// place for an index, so `docker_compat` refuses one, as BuildKit's docker exporter does.
    pub fn write_built_tar(
        &self,
        built: &Built,
        names: &[String],
        docker_compat: bool,
        out: &mut dyn Write,
    ) -> Result<(), SolveError> {
        if docker_compat && matches!(built, Built::Index(_)) {
            return Err(SolveError::msg(
                "docker exporter does not currently support exporting manifest lists \
                 (a multi-platform build): use type=oci, or type=image with push=true",
            ));
        }
        let inner = self.inner();
        let fail = |e: std::io::Error| SolveError::msg(format!("writing image tar: {e}"));
        let mut tar = tar::Builder::new(out);
        let add_bytes = |tar: &mut tar::Builder<&mut dyn Write>,
                         path: &str,
                         data: &[u8]|
         -> Result<(), SolveError> {
            let mut h = tar::Header::new_ustar();
            h.set_size(data.len() as u64);
            h.set_mode(0o644);
            h.set_mtime(0);
            h.set_entry_type(tar::EntryType::Regular);
            tar.append_data(&mut h, path, data).map_err(fail)
        };
        add_bytes(&mut tar, "oci-layout", br#"{"imageLayoutVersion":"1.0.0"}"#)?;
        let mut written: HashSet<Digest> = HashSet::new();
        for (_, image) in built.images() {
            for l in &image.layers {
                let d = l.blob.blob_digest()?;
                if !written.insert(d.clone()) {
                    continue;
                }
                let mut f = std::fs::File::open(inner.content.path(&d)).map_err(fail)?;
                let mut h = tar::Header::new_ustar();
                h.set_size(f.metadata().map_err(fail)?.len());
                h.set_mode(0o644);
                h.set_mtime(0);
                h.set_entry_type(tar::EntryType::Regular);
                tar.append_data(&mut h, format!("blobs/sha256/{}", d.hex()), &mut f)
                    .map_err(fail)?;
            }
            for (d, bytes) in [
                (&image.config_digest, &image.config),
                (&image.manifest_digest, &image.manifest),
            ] {
                if written.insert(d.clone()) {
                    add_bytes(&mut tar, &format!("blobs/sha256/{}", d.hex()), bytes)?;
                }
            }
        }
        if let Built::Index(index) = built {
            add_bytes(
                &mut tar,
                &format!("blobs/sha256/{}", index.digest.hex()),
                &index.index,
            )?;
        }
        let mut annotations = serde_json::Map::new();
        if let Some(first) = names.first() {
            annotations.insert("io.containerd.image.name".into(), json!(first));
            if let Ok(r) = Reference::parse(first) {
                if let Some(tag) = &r.tag {
                    annotations.insert("org.opencontainers.image.ref.name".into(), json!(tag));
                }
            }
        }
        let index = json!({
            "schemaVersion": 2,
            "mediaType": OCI_INDEX,
            "manifests": [{
                "mediaType": built.media_type(),
                "digest": built.digest().to_string(),
                "size": built.bytes().len(),
                "annotations": annotations,
            }],
        });
        add_bytes(
            &mut tar,
            "index.json",
            &serde_json::to_vec(&index).expect("json"),
        )?;
        if let (true, Built::Image(image)) = (docker_compat, built) {
            let tags: Vec<String> = names
                .iter()
                .filter_map(|n| Reference::parse(n).ok())
                .map(|r| r.familiar())
                .collect();
            let manifest = json!([{
                "Config": format!("blobs/sha256/{}", image.config_digest.hex()),
                "RepoTags": tags,
                "Layers": image.layers.iter().map(|l| format!("blobs/sha256/{}", l.blob.digest.trim_start_matches("sha256:"))).collect::<Vec<_>>(),
            }]);
            add_bytes(
                &mut tar,
                "manifest.json",
                &serde_json::to_vec(&manifest).expect("json"),
            )?;
        }
        tar.into_inner().map_err(fail)?.flush().map_err(fail)?;
        Ok(())
    }
}
