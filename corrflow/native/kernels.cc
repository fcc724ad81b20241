// corrflow's native CPU kernels, called from JAX through the XLA FFI (corrflow/native/__init__.py builds this file
// once per machine and registers it; the pure-JAX kernels stay the reference and the fallback): CorrflowStapleForce,
// CorrflowExpLeft, CorrflowOverrelax, CorrflowHeatbath, CorrflowAlgebraLogj, CorrflowPathSums, CorrflowU1Force.
//
// CorrflowStapleForce: F_mu(x) = P_TA[U_mu(x) Sigma_mu(x)] for 4D SU(3) links, Sigma_mu the staple sum weighted by
// the symmetric (4, 4) plane weights -- the numbers of corrflow.lattice.staple_force_xla up to rounding.
//
// Layout.  The links (*batch, L0, L1, L2, L3, 4, 3, 3) (complex, colour innermost) are copied once per call into
// "virtual nodes": the W = 8 (else 4) SIMD lanes of a vector hold the W sites x_a = k (L_a / W) + o, k = 0..W-1, of
// one block along a lane axis a (the first extent W divides), and each block stores its 4 links as 18 vectors (real
// and imaginary planes of the 3x3 entries).  Every 3x3 complex product then works on W sites at once with plain
// vector arithmetic, and a shift by one site is another block -- across the edge of a lane's range along a, a
// rotation of the lanes by one.  All products of a site stay in registers and L1; the links are read once and only
// the force is written.
//
// One translation unit (a unity build: the FFI headers are compiled once): the kernels live in the headers
// simd.h (vectors, matrices, threads, geometry), vmath.h (transcendentals, Threefry), staples.h (links to virtual
// nodes, staple sums), force.h, exp.h, sweeps.h (over-relaxation and heat bath), jacobian.h, paths.h and u1.h (the
// U(1) force); this file binds them to XLA's FFI.

#include "exp.h"
#include "force.h"
#include "jacobian.h"
#include "paths.h"
#include "simd.h"
#include "sweeps.h"
#include "u1.h"
#include "vmath.h"

namespace ffi = xla::ffi;

XLA_FFI_DEFINE_HANDLER_SYMBOL(CorrflowStapleForce, corrflow_native::StapleForceImpl,
                              ffi::Ffi::Bind()
                                  .Ctx<ffi::ThreadPool>()
                                  .Arg<ffi::AnyBuffer>()
                                  .Arg<ffi::Buffer<ffi::F64>>()
                                  .Ret<ffi::AnyBuffer>());

XLA_FFI_DEFINE_HANDLER_SYMBOL(CorrflowExpLeft, corrflow_native::ExpLeftImpl,
                              ffi::Ffi::Bind()
                                  .Ctx<ffi::ThreadPool>()
                                  .Arg<ffi::AnyBuffer>()
                                  .Arg<ffi::AnyBuffer>()
                                  .Ret<ffi::AnyBuffer>());

XLA_FFI_DEFINE_HANDLER_SYMBOL(CorrflowOverrelax, corrflow_native::OverrelaxImpl,
                              ffi::Ffi::Bind()
                                  .Ctx<ffi::ThreadPool>()
                                  .Arg<ffi::AnyBuffer>()
                                  .Arg<ffi::Buffer<ffi::F64>>()
                                  .Ret<ffi::AnyBuffer>());

XLA_FFI_DEFINE_HANDLER_SYMBOL(CorrflowHeatbath, corrflow_native::HeatbathImpl,
                              ffi::Ffi::Bind()
                                  .Ctx<ffi::ThreadPool>()
                                  .Arg<ffi::AnyBuffer>()
                                  .Arg<ffi::Buffer<ffi::F64>>()
                                  .Arg<ffi::Buffer<ffi::U32>>()
                                  .Ret<ffi::AnyBuffer>()
                                  .Attr<int64_t>("max_rounds"));

XLA_FFI_DEFINE_HANDLER_SYMBOL(CorrflowAlgebraLogj, corrflow_native::AlgebraLogjImpl,
                              ffi::Ffi::Bind()
                                  .Ctx<ffi::ThreadPool>()
                                  .Arg<ffi::AnyBuffer>()
                                  .Arg<ffi::Buffer<ffi::F64>>()
                                  .Arg<ffi::Buffer<ffi::F64>>()
                                  .Arg<ffi::Buffer<ffi::F64>>()
                                  .Ret<ffi::AnyBuffer>()
                                  .Ret<ffi::AnyBuffer>());

XLA_FFI_DEFINE_HANDLER_SYMBOL(CorrflowPathSums, corrflow_native::PathSumsImpl,
                              ffi::Ffi::Bind()
                                  .Ctx<ffi::ThreadPool>()
                                  .Arg<ffi::AnyBuffer>()
                                  .Arg<ffi::Buffer<ffi::S32>>()
                                  .Arg<ffi::Buffer<ffi::S32>>()
                                  .Arg<ffi::Buffer<ffi::S32>>()
                                  .Arg<ffi::Buffer<ffi::S32>>()
                                  .Ret<ffi::AnyBuffer>());

XLA_FFI_DEFINE_HANDLER_SYMBOL(CorrflowU1Force, corrflow_native::U1ForceImpl,
                              ffi::Ffi::Bind()
                                  .Ctx<ffi::ThreadPool>()
                                  .Arg<ffi::AnyBuffer>()
                                  .Arg<ffi::Buffer<ffi::F64>>()
                                  .Ret<ffi::AnyBuffer>());
