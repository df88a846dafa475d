// What a parameter is, for optimizer grouping: Linear weights take weight
// decay, the rest by configuration. nn/ tags parameters with these strings
// (nn::ParamInfo) and optim/ groups by them; they live here so that neither
// layer needs the other.
#pragma once

namespace coil::param_kind {
inline constexpr const char* linear_weight = "linear_weight";
inline constexpr const char* linear_bias = "linear_bias";
inline constexpr const char* conv_weight = "conv_weight";
inline constexpr const char* conv_bias = "conv_bias";
inline constexpr const char* norm_weight = "norm_weight";
inline constexpr const char* embedding = "embedding";
inline constexpr const char* ssm = "ssm";  // A_log, D, dt bias, non-selective B/C
}  // namespace coil::param_kind
