//! Reading the shell's answer from the guest's screen: a screendump taken
//! through the boot's one QMP connection, searched pixel-exactly for the
//! text rendered with the kernel's own font (see `crate::screen`).

use std::path::PathBuf;

use crate::qmp::Qmp;
use crate::screen::{find, font, ppm};

/// Whether the guest behind `qmp` shows `text` on its screen; `Err` says
/// why not (or why the screen could not be read).
pub fn answer_on_screen(qmp: &mut Qmp, text: &str) -> Result<(), String> {
    let file = screendump_path();
    qmp.screendump(&file)?;
    let bytes =
        std::fs::read(&file).map_err(|error| format!("reading {}: {error}", file.display()))?;
    let _ = std::fs::remove_file(&file);
    let image = ppm::parse(&bytes)?;
    match find::find(&image, &font::render(text)) {
        Some(_) => Ok(()),
        None => Err(format!(
            "`{text}` is not on the {}x{} screen",
            image.width, image.height
        )),
    }
}

fn screendump_path() -> PathBuf {
    std::env::temp_dir().join(format!("boot-image-console-{}.ppm", std::process::id()))
}
