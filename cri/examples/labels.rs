//! Prints the runtime's version and the labels the exporter would give each container and pod
//! sandbox the CRI runtime at a socket lists (default `/run/containerd/containerd.sock`):
//!
//!     cargo run -p proclens-cri --example labels -- /run/containerd/containerd.sock

use std::path::PathBuf;
use std::process::ExitCode;

use proclens_cri::{CriClient, CriError, Snapshot};

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    let socket = std::env::args_os().nth(1).map_or_else(
        || PathBuf::from("/run/containerd/containerd.sock"),
        PathBuf::from,
    );
    match run(&socket).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {err}");
            ExitCode::from(2)
        }
    }
}

/// Connects, lists, prints one line per container and sandbox.
async fn run(socket: &std::path::Path) -> Result<(), CriError> {
    let client = CriClient::connect(socket).await?;
    let version = client.version().await?;
    println!(
        "{} {} (CRI {})",
        version.runtime_name, version.runtime_version, version.runtime_api_version
    );
    let (containers, sandboxes, images) = tokio::try_join!(
        client.list_containers(),
        client.list_sandboxes(),
        client.list_images()
    )?;
    let snapshot = Snapshot::build(&containers, &sandboxes, &images);
    let ids = sandboxes
        .iter()
        .map(|s| &s.id)
        .chain(containers.iter().map(|c| &c.id));
    for id in ids {
        if let Some(l) = snapshot.get(id) {
            println!(
                "name={} image={:?} namespace={:?} pod={:?} container={:?} sandbox={}",
                l.name, l.image, l.namespace, l.pod, l.container, l.sandbox_id
            );
        }
    }
    Ok(())
}
