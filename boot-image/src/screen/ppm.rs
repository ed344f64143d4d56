//! Binary PPM (`P6`) images, the format of QEMU's `screendump`.

/// An RGB image, 8 bits per channel, rows top to bottom.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Image {
    pub width: usize,
    pub height: usize,
    /// `width * height` pixels, row-major.
    pixels: Vec<[u8; 3]>,
}

impl Image {
    /// An image of one colour.
    pub fn filled(width: usize, height: usize, colour: [u8; 3]) -> Self {
        Self {
            width,
            height,
            pixels: vec![colour; width * height],
        }
    }

    /// The pixel at (`x`, `y`); panics outside the image.
    pub fn pixel(&self, x: usize, y: usize) -> [u8; 3] {
        assert!(x < self.width && y < self.height, "({x}, {y}) is outside");
        self.pixels[y * self.width + x]
    }

    pub fn set(&mut self, x: usize, y: usize, colour: [u8; 3]) {
        assert!(x < self.width && y < self.height, "({x}, {y}) is outside");
        self.pixels[y * self.width + x] = colour;
    }

    /// The image as a `P6` file.
    pub fn to_ppm(&self) -> Vec<u8> {
        let mut bytes = format!("P6\n{} {}\n255\n", self.width, self.height).into_bytes();
        bytes.extend(self.pixels.iter().flatten());
        bytes
    }
}

/// Parses a `P6` file with a maximum value of 255 (what QEMU writes);
/// comments in the header are allowed.
pub fn parse(bytes: &[u8]) -> Result<Image, String> {
    let mut at = 0;
    let mut fields = [0usize; 3];
    if bytes.get(..2) != Some(b"P6") {
        return Err("not a binary PPM (no P6 magic)".into());
    }
    at += 2;
    for field in &mut fields {
        // Whitespace and `#` comments (to the end of the line) separate fields.
        loop {
            match bytes.get(at) {
                Some(byte) if byte.is_ascii_whitespace() => at += 1,
                Some(b'#') => {
                    while bytes.get(at).is_some_and(|&byte| byte != b'\n') {
                        at += 1;
                    }
                }
                _ => break,
            }
        }
        let start = at;
        while bytes.get(at).is_some_and(u8::is_ascii_digit) {
            at += 1;
        }
        *field = std::str::from_utf8(&bytes[start..at])
            .ok()
            .and_then(|digits| digits.parse().ok())
            .ok_or_else(|| format!("bad PPM header field at byte {start}"))?;
    }
    let [width, height, max] = fields;
    if max != 255 {
        return Err(format!("PPM with maximum value {max}; only 255 is read"));
    }
    // Exactly one whitespace byte ends the header.
    if !bytes.get(at).is_some_and(u8::is_ascii_whitespace) {
        return Err("PPM header does not end in whitespace".into());
    }
    at += 1;
    let len = width
        .checked_mul(height)
        .and_then(|pixels| pixels.checked_mul(3))
        .ok_or("PPM size overflows")?;
    let data = bytes.get(at..at + len).ok_or_else(|| {
        format!(
            "PPM data is {} bytes, {width}x{height} needs {len}",
            bytes.len() - at
        )
    })?;
    Ok(Image {
        width,
        height,
        pixels: data.as_chunks::<3>().0.to_vec(),
    })
}
