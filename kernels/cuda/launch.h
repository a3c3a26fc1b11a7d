// How onebit's CUDA kernels are launched (plain C++: no torch, no CUDA headers).
//
// Programmatic dependent launch (Hopper and newer): each kernel is launched with the stream
// attribute that lets the GPU start it while the previous kernel in the stream is still
// running; its first statement waits for that kernel to finish (griddepcontrol.wait, which
// also makes its memory visible) and then lets the next one start (launch_dependents). The
// results are those of launches one after another; what is saved is the gap between two
// kernels, which in a one-token decode step of microsecond kernels is a large share of the
// time. It also holds inside CUDA graphs. Off on devices older than sm_90 and when
// ONEBIT_CUDA_PDL=0 (read once); set_programmatic_launch changes it for later launches.
#pragma once

namespace onebit::kernels::cuda {

int compute_capability_major();  // of the current device (cached per device; 0 if none)
int multiprocessors(int device);  // of a CUDA device (cached per device; at least 1)
bool programmatic_launch();       // for the current device
void set_programmatic_launch(bool on);
// For error messages: "" when programmatic launch is off, else a note that it was on and how
// to turn it off.
const char* programmatic_launch_note();
// ONEBIT_CUDA_PDL's meaning: unset or "1" on, "0" off; another value throws
// std::invalid_argument naming the variable.
bool programmatic_launch_env(const char* value);

}  // namespace onebit::kernels::cuda
