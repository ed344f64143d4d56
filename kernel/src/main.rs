#![no_std]
#![no_main]
use bootloader_api::{entry_point, BootInfo};
entry_point!(kmain);
fn kmain(_b: &'static mut BootInfo) -> ! { loop {} }
#[panic_handler]
fn panic(_: &core::panic::PanicInfo) -> ! { loop {} }
