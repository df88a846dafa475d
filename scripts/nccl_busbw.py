# NCCL's own all-reduce bandwidth through PyTorch, for the same sizes and the
# same definition as `coil bench allreduce` (f32 sum, median of 20, busbw =
# algbw * 2 (n - 1) / n). Run: torchrun --nproc-per-node 2 nccl_busbw.py
import os
import time

import torch
import torch.distributed as dist

dist.init_process_group("nccl")
rank, n = dist.get_rank(), dist.get_world_size()
torch.cuda.set_device(int(os.environ["LOCAL_RANK"]))
bus = 2 * (n - 1) / n
if rank == 0:
    print(f"torch {torch.__version__}, NCCL {torch.cuda.nccl.version()}, {n} ranks")
    print(f"{'bytes':>12} {'time_us':>10} {'algbw_GB/s':>12} {'busbw_GB/s':>12}")
for mb in (1, 4, 16, 64, 256, 1024):
    t = torch.randn(mb * (1 << 20) // 4, device="cuda")
    for _ in range(5):
        dist.all_reduce(t)
    torch.cuda.synchronize()
    times = []
    for _ in range(20):
        t0 = time.perf_counter()
        dist.all_reduce(t)
        torch.cuda.synchronize()
        times.append(time.perf_counter() - t0)
    s = sorted(times)[len(times) // 2]
    b = t.numel() * 4
    if rank == 0:
        print(f"{b:12d} {s * 1e6:10.1f} {b / s / 1e9:12.1f} {b / s / 1e9 * bus:12.1f}")
dist.destroy_process_group()
