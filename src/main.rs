//! The kernel binary: what runs once the VM is up.
#![cfg_attr(target_os = "none", no_std, no_main)]

#[cfg(target_os = "none")]
mod kernel {
    use pi2vm::println;

    /// Called by `pi2vm::kernel_init` once the machine is set up.
    #[no_mangle]
    fn kernel_main(_info: &pi2vm::init::BootInfo) -> ! {
        println!("idle: nothing more to do (WFI)");
        loop {
            aarch32_cpu::asm::wfi();
        }
    }
}

#[cfg(not(target_os = "none"))]
fn main() {
    eprintln!("the kernel builds for armv7a-none-eabi only: use `make`");
}
