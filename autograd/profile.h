// A coarse op profiler for finding where a training step's time goes
// (COIL_PROFILE=1, or profile::enable()). It synchronises the device around
// every op, so the step runs slower while it is on; the split between ops is
// what it is for. Forward time is charged to the op recorded next; backward
// time to the node that ran.
#pragma once
#include <string>

#include "core/device.h"

namespace coil::profile {

bool enabled();
void enable(bool on);
// With shapes on, each op is its own row per input signature (shapes,
// dtypes, "T" for a transposed last-two-dims view): "matmul (32x80x1536 bf16,
// 80x1536T bf16)". COIL_PROFILE_SHAPES=1 turns it on too.
bool shapes();
void enable_shapes(bool on);
void reset();
// Called by the engine: the end of a forward op on `device`.
void forward_mark(const char* op, Device device);
// Around a node's backward.
void backward_begin(Device device);
void backward_end(const std::string& op, Device device);
// The table, largest first: op, direction, calls, total ms, share.
std::string report();

}  // namespace coil::profile
