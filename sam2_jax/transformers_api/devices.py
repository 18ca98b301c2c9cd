"""transformers' device arguments in JAX terms: a `jax.Device`, a platform name, or None for JAX's default."""

from __future__ import annotations

import jax


def jax_device(device, name: str):
    """`device` (a jax.Device, a name like "cpu", "cuda", "cuda:1", "gpu", "tpu", a torch.device, or None) ->
    a jax.Device, or None for JAX's default device. `name` is the argument's name, for errors."""
    if device is None or isinstance(device, jax.Device):
        return device
    if hasattr(device, "type"):  # a torch.device
        device = str(device)
    if not isinstance(device, str):
        raise TypeError(f"{name}: expected a jax.Device, a device name like 'cpu' or 'cuda:0', or None, "
                        f"got {type(device).__name__}")
    platform, _, index = device.partition(":")
    platform = {"cuda": "gpu", "mps": "METAL"}.get(platform, platform)
    try:
        devices = jax.devices(platform)
    except RuntimeError as err:
        raise ValueError(f"{name}: no JAX device for {device!r} ({err})") from err
    if index and not index.isdigit():
        raise ValueError(f"{name}: expected a device index after ':', got {device!r}")
    i = int(index) if index else 0
    if i >= len(devices):
        raise ValueError(f"{name}: expected a device index below {len(devices)} for {platform}, got {i}")
    return devices[i]
