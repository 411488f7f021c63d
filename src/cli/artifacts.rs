//! `replicant crd` and `replicant copy-binary`: what the binary writes out for an installation
//! (the CRDs generated from the types, and a copy of itself for an init container).

use std::{
    fs,
    path::{Path, PathBuf},
    process::ExitCode,
};

use super::CliError;

/// `replicant crd` flags.
#[derive(clap::Args, Debug)]
pub(super) struct CrdArgs {
    /// Write one file per CRD into this directory instead of printing.
    #[arg(long)]
    pub(super) dir: Option<PathBuf>,
}

/// `replicant copy-binary` flags.
#[derive(clap::Args, Debug)]
pub(super) struct CopyBinaryArgs {
    /// The directory, usually an `emptyDir` volume shared with the database container.
    pub(super) dir: PathBuf,
}

pub(super) fn crd(args: CrdArgs) -> Result<ExitCode, CliError> {
    let dir = args.dir.as_deref();

    match dir {
        None => print!("{}", crate::crd::all_yaml()),
        Some(dir) => {
            for (file, crd) in crate::crd::all() {
                let path = dir.join(file);
                fs::write(&path, crate::crd::to_yaml(&crd)).map_err(|source| CliError::Io {
                    path: path.display().to_string(),
                    source,
                })?;
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

pub(super) fn copy_binary(args: CopyBinaryArgs) -> Result<ExitCode, CliError> {
    let dir: &Path = &args.dir;

    use std::os::unix::fs::PermissionsExt;
    let io = |path: &Path| {
        let path = path.display().to_string();
        move |source| CliError::Io { path, source }
    };
    let exe = std::env::current_exe().map_err(io(Path::new("the running binary")))?;
    fs::create_dir_all(dir).map_err(io(dir))?;
    // Written beside, then renamed: a pod never sees half a binary.
    let partial = dir.join(".replicant.partial");
    let target = dir.join("replicant");
    fs::copy(&exe, &partial).map_err(io(&partial))?;
    fs::set_permissions(&partial, fs::Permissions::from_mode(0o755)).map_err(io(&partial))?;
    fs::rename(&partial, &target).map_err(io(&target))?;
    println!("{}", target.display());
    Ok(ExitCode::SUCCESS)
}
