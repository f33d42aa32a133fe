//! Portable memory management: no assembly, no MMIO, tested on the host.
//!
//! Hardware is reached only through small traits ([`frame::FrameAllocator`] here, and the
//! physical-memory and TLB traits of the address-space code), which the kernel implements with the
//! direct map and CP15 and the host tests with a `Vec` of "RAM" and an emulated TLB.

pub mod addr;
pub mod asid;
pub mod desc;
pub mod fault;
pub mod file_object;
pub mod frame;
pub mod frame_cache;
pub mod kmem;
pub mod layout;
pub mod nonresident;
pub mod page_cache;
pub mod phys;
pub mod pmm;
pub mod region_map;
pub mod swap_slots;
pub mod tlb;
pub mod uvm;
pub mod vas;
pub mod window;
pub mod zero_pool;

pub use addr::{Frame, Page, PhysAddr, VirtAddr, PAGE_SIZE};
pub use desc::{Access, MapFlags, MemoryType};
pub use frame::{FrameAllocator, PmmError};
pub use tlb::{Asid, Tlb};
pub use uvm::{FrameRefs, SharedObject, UserVm, UvmError};
pub use vas::{AddressSpace, MapError};
pub use window::{KernelWindow, WindowError};
