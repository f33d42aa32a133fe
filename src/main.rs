//! The kernel binary: what runs once the VM is up. The kernel task starts the scheduler, a demo
//! of two processes, and the UART shell.
#![cfg_attr(target_os = "none", no_std, no_main)]

#[cfg(target_os = "none")]
mod kernel {
    use pi2vm::{println, proc, shell};

    /// Called by `pi2vm::kernel_init` once the machine is set up.
    #[no_mangle]
    fn kernel_main(_info: &pi2vm::init::BootInfo) -> ! {
        proc::init();
        println!("scheduler up: round-robin, {} ms time slice", proc::TICK_MS);
        shell::start_demo(5);
        shell::run_shell()
    }
}

#[cfg(not(target_os = "none"))]
fn main() {
    eprintln!("the kernel builds for armv7a-none-eabi only: use `make`");
}
