//! `cargo xtask package`: the images a cluster pulls (meshwright_testbed::package), their
//! digests pinned into k8s/ and wasmplugins/, and with `--push REGISTRY` pushed there.

use crate::args::Args;
use crate::{modules, say};
use anyhow::{Result, bail};
use meshwright_testbed::package;

pub fn package(mut args: Args) -> Result<()> {
    let registry = args.value("--push")?;
    let insecure = args.flag("--insecure");
    let check = args.flag("--check");
    args.finish()?;
    modules::build()?;
    eprintln!("==> the images (the shop's release build takes minutes the first time)");
    let images = package::all_images()?;
    for i in &images {
        say(&format!(
            "{}:{}@{}  ({})",
            i.repository,
            i.tag,
            i.digest,
            i.layout.display()
        ));
    }
    if check {
        let stale = package::stale_pins(&images)?;
        if !stale.is_empty() {
            bail!(
                "these files pin other digests than the images built now (cargo xtask package writes them): {}",
                stale
                    .iter()
                    .map(|p| p.display().to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            );
        }
        say("every pin in k8s/ and wasmplugins/ is the digest of the image built now");
    } else {
        for f in package::write_pins(&images)? {
            say(&format!("pinned: {}", f.display()));
        }
    }
    for f in package::sboms(&images)? {
        say(&format!("SBOM: {}", f.display()));
    }
    if let Some(r) = registry {
        for i in &images {
            say(&format!("pushed: {}", package::push(i, &r, !insecure)?));
        }
    }
    Ok(())
}
