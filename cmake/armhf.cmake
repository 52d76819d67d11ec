# Cross-build for 32-bit ARM boards (Debian armhf: ARMv7, hard float).
#   cmake -S . -B build-armhf -DCMAKE_TOOLCHAIN_FILE=cmake/armhf.cmake \
#         -DARMHF_SYSROOT=/path/to/sysroot
# The sysroot holds Debian's armhf -dev packages, unpacked (scripts/armhf
# makes one with mmdebstrap). Tests run under qemu-arm-static.
set(CMAKE_SYSTEM_NAME Linux)
set(CMAKE_SYSTEM_PROCESSOR arm)
set(triple arm-linux-gnueabihf)
set(CMAKE_C_COMPILER ${triple}-gcc)

if(NOT ARMHF_SYSROOT)
	set(ARMHF_SYSROOT $ENV{ARMHF_SYSROOT})
endif()
if(NOT ARMHF_SYSROOT)
	message(FATAL_ERROR "set ARMHF_SYSROOT to an armhf sysroot")
endif()
# Carried into try_compile projects, which read the toolchain file again.
list(APPEND CMAKE_TRY_COMPILE_PLATFORM_VARIABLES ARMHF_SYSROOT)
set(CMAKE_SYSROOT ${ARMHF_SYSROOT})
set(CMAKE_FIND_ROOT_PATH ${ARMHF_SYSROOT})
set(CMAKE_FIND_ROOT_PATH_MODE_PROGRAM NEVER)
set(CMAKE_FIND_ROOT_PATH_MODE_LIBRARY ONLY)
set(CMAKE_FIND_ROOT_PATH_MODE_INCLUDE ONLY)
set(CMAKE_FIND_ROOT_PATH_MODE_PACKAGE ONLY)

# pkg-config reads the sysroot's .pc files and prefixes their paths.
set(ENV{PKG_CONFIG_DIR} "")
set(ENV{PKG_CONFIG_LIBDIR}
	"${ARMHF_SYSROOT}/usr/lib/${triple}/pkgconfig:${ARMHF_SYSROOT}/usr/share/pkgconfig")
set(ENV{PKG_CONFIG_SYSROOT_DIR} ${ARMHF_SYSROOT})

# CTest runs the unit test binaries through qemu, with the sysroot's
# dynamic loader and libraries.
set(CMAKE_CROSSCOMPILING_EMULATOR qemu-arm-static -L ${ARMHF_SYSROOT})
