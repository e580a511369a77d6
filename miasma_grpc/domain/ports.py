"""Port planning: turns an app's bindings plus a requested edit into new bindings.

This is Miasma's port semantics (docs/design.md §1) as one pure function. Rules:

* removals apply before additions; the whole edit is all or nothing;
* a removed side goes back to auto; slots never shift because of it;
* an added published (target) port fills the first slot whose published
  (target) side is auto and whose protocol matches -- a fully automatic slot
  may change protocol -- else a new slot is appended ("order matters");
* adding a port the app already has on that side is a no-op (unless it
  names a publish mode, which then changes);
* a slot with both sides auto is dropped unless it is the only one;
* auto ports are sticky: kept unless their slot's side is replaced.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field, replace

from miasma_grpc.domain.allocator import PortLedger, TargetChooser
from miasma_grpc.domain.errors import (
    AlreadyExists,
    FailedPrecondition,
    FieldViolation,
    InvalidArgument,
)
from miasma_grpc.domain.models import PORT_MAX, PORT_MIN, Binding, Port, Protocol, PublishMode

MAX_SLOTS = 64


@dataclass(frozen=True)
class EditFields:
    """Request field names used in error messages (they differ per RPC)."""

    add_published: str = "add_published_ports"
    remove_published: str = "remove_published_ports"
    add_target: str = "add_target_ports"
    remove_target: str = "remove_target_ports"


CREATE_FIELDS = EditFields(add_published="published_ports", add_target="target_ports")


@dataclass(frozen=True)
class PortEdit:
    """A requested change of an app's ports."""

    add_published: tuple[Port, ...] = ()
    remove_published: tuple[Port, ...] = ()
    add_target: tuple[Port, ...] = ()
    remove_target: tuple[Port, ...] = ()
    # Publish modes asked for some of ``add_published`` (the rest: ingress, or unchanged).
    modes: Mapping[Port, PublishMode] = field(default_factory=dict)


@dataclass(frozen=True)
class SlotChange:
    """One slot's before and after; ``None`` means the slot did not exist."""

    slot: int
    old: Binding | None
    new: Binding | None


@dataclass
class _Slot:
    """Mutable working copy of a binding; ``None`` marks a side still to allocate."""

    protocol: Protocol
    published: int | None
    target: int | None
    published_explicit: bool
    target_explicit: bool
    mode: PublishMode = PublishMode.INGRESS

    @property
    def fully_auto(self) -> bool:
        return not (self.published_explicit or self.target_explicit)


def default_bindings(
    app: str, ledger: PortLedger, choose_target: TargetChooser
) -> tuple[Binding, ...]:
    """The single auto/auto slot every new app starts with."""
    return plan_edit(app, (), PortEdit(), ledger, choose_target)


def plan_edit(
    app: str,
    current: Sequence[Binding],
    edit: PortEdit,
    ledger: PortLedger,
    choose_target: TargetChooser,
    fields: EditFields = EditFields(),
    busy: Callable[[Port], bool] | None = None,
) -> tuple[Binding, ...]:
    """Apply ``edit`` to ``current`` and return the new bindings.

    Raises :class:`InvalidArgument` for malformed ports or removals of ports
    the app does not have, :class:`AlreadyExists` when another app holds a
    requested published port, :class:`FailedPrecondition` for reserved ports
    and for ports ``busy`` says a process outside Miasma holds, and
    :class:`ResourceExhausted` when no auto port is left. Nothing is
    recorded in the ledger; the caller holds the result after committing.
    """
    _validate(edit, fields)
    slots = [
        _Slot(b.protocol, b.published, b.target, b.published_explicit, b.target_explicit, b.mode)
        for b in current
    ]
    _apply_removals(slots, edit, fields)
    _apply_additions(app, slots, edit, ledger, fields, busy)
    if len(slots) > 1:
        slots = [s for s in slots if not s.fully_auto] or slots[:1]
    if not slots:
        slots.append(_Slot(Protocol.TCP, None, None, False, False))
    if len(slots) > MAX_SLOTS:
        raise InvalidArgument(
            f"an app may have at most {MAX_SLOTS} port bindings, this edit would give {len(slots)}",
            reason="TOO_MANY_BINDINGS",
        )
    _fill_auto(slots, ledger, choose_target, busy)
    return tuple(
        Binding(
            published=s.published or 0,
            target=s.target or 0,
            protocol=s.protocol,
            published_explicit=s.published_explicit,
            target_explicit=s.target_explicit,
            mode=s.mode,
        )
        for s in slots
    )


def diff_bindings(old: Sequence[Binding], new: Sequence[Binding]) -> tuple[SlotChange, ...]:
    """Slot-by-slot changes between two binding lists."""
    changes = []
    for index in range(max(len(old), len(new))):
        before = old[index] if index < len(old) else None
        after = new[index] if index < len(new) else None
        if before != after:
            changes.append(SlotChange(index, before, after))
    return tuple(changes)


def published_ports(bindings: Sequence[Binding]) -> set[Port]:
    """The published ports of ``bindings``."""
    return {b.published_port for b in bindings}


def _validate(edit: PortEdit, fields: EditFields) -> None:
    violations: list[FieldViolation] = []
    lists = (
        (fields.add_published, edit.add_published),
        (fields.remove_published, edit.remove_published),
        (fields.add_target, edit.add_target),
        (fields.remove_target, edit.remove_target),
    )
    for name, ports in lists:
        if len(ports) > MAX_SLOTS:
            violations.append(FieldViolation(name, f"at most {MAX_SLOTS} ports per request"))
            continue
        seen: set[Port] = set()
        for index, port in enumerate(ports):
            if not PORT_MIN <= port.number <= PORT_MAX:
                violations.append(
                    FieldViolation(
                        f"{name}[{index}]",
                        f"port {port.number} is out of range: ports are {PORT_MIN}-{PORT_MAX}",
                    )
                )
            elif port in seen:
                violations.append(
                    FieldViolation(f"{name}[{index}]", f"port {port} appears more than once")
                )
            seen.add(port)
    if violations:
        summary = "; ".join(f"{v.field}: {v.description}" for v in violations)
        raise InvalidArgument(summary, reason="INVALID_PORT", violations=violations)


def _apply_removals(slots: list[_Slot], edit: PortEdit, fields: EditFields) -> None:
    # The error must list the ports the app has *before* this (all-or-nothing) request,
    # not what is left after the earlier removals of the same request.
    before = [replace(slot) for slot in slots]
    for index, port in enumerate(edit.remove_published):
        slot = _find(slots, port, published=True)
        if slot is None:
            raise _not_held(before, port, f"{fields.remove_published}[{index}]", published=True)
        slot.published, slot.published_explicit, slot.mode = None, False, PublishMode.INGRESS
    for index, port in enumerate(edit.remove_target):
        slot = _find(slots, port, published=False)
        if slot is None:
            raise _not_held(before, port, f"{fields.remove_target}[{index}]", published=False)
        slot.target, slot.target_explicit = None, False


def _apply_additions(
    app: str,
    slots: list[_Slot],
    edit: PortEdit,
    ledger: PortLedger,
    fields: EditFields,
    busy: Callable[[Port], bool] | None,
) -> None:
    for index, port in enumerate(edit.add_published):
        field = f"{fields.add_published}[{index}]"
        if port in ledger.reserved:
            raise FailedPrecondition(
                f"{field}: port {port} is reserved and cannot be published",
                reason="PORT_RESERVED",
                violations=[FieldViolation(field, f"port {port} is reserved")],
            )
        holder = ledger.holder(port)
        if holder is not None and holder != app:
            raise AlreadyExists(
                f"{field}: published port {port} is already used by app {holder!r}",
                reason="PORT_IN_USE",
                violations=[FieldViolation(field, f"port {port} is held by app {holder!r}")],
                resource=f"apps/{holder}",
                metadata={"port": str(port.number), "protocol": str(port.protocol)},
            )
        if holder is None and busy is not None and busy(port):
            raise FailedPrecondition(
                f"{field}: port {port} is already in use on the Docker host by something "
                "that is not an app of this Miasma",
                reason="PORT_BUSY_ON_HOST",
                violations=[FieldViolation(field, f"port {port} is in use on the host")],
                metadata={"port": str(port.number), "protocol": str(port.protocol)},
            )
        mode = edit.modes.get(port)
        existing = _find(slots, port, published=True)
        if existing is not None and existing.published_explicit:
            existing.mode = mode or existing.mode
            continue
        if existing is not None:  # our own auto port, now asked for explicitly
            existing.published = None
        slot = _first_open(slots, port.protocol, published=True)
        if slot is None:
            slot = _Slot(port.protocol, port.number, None, True, False)
            slots.append(slot)
        else:
            _claim(slot, port.protocol)
            slot.published, slot.published_explicit = port.number, True
        slot.mode = mode or PublishMode.INGRESS
    for port in edit.add_target:
        existing = _find(slots, port, published=False)
        if existing is not None and existing.target_explicit:
            continue
        if existing is not None:
            existing.target = None
        slot = _first_open(slots, port.protocol, published=False)
        if slot is None:
            slots.append(_Slot(port.protocol, None, port.number, False, True))
        else:
            _claim(slot, port.protocol)
            slot.target, slot.target_explicit = port.number, True


def _claim(slot: _Slot, protocol: Protocol) -> None:
    """Give a fully automatic slot a new protocol; its auto ports are re-chosen."""
    if slot.protocol != protocol:
        slot.protocol = protocol
        slot.published = None
        slot.target = None


def _first_open(slots: list[_Slot], protocol: Protocol, *, published: bool) -> _Slot | None:
    for slot in slots:
        explicit = slot.published_explicit if published else slot.target_explicit
        if not explicit and (slot.protocol == protocol or slot.fully_auto):
            return slot
    return None


def _find(slots: list[_Slot], port: Port, *, published: bool) -> _Slot | None:
    for slot in slots:
        number = slot.published if published else slot.target
        if number == port.number and slot.protocol == port.protocol:
            return slot
    return None


def _not_held(slots: list[_Slot], port: Port, field: str, *, published: bool) -> InvalidArgument:
    side = "published" if published else "target"
    have = [
        str(Port(n, s.protocol))
        for s in slots
        if (n := (s.published if published else s.target)) is not None
    ]
    description = (
        f"the app has no {side} port {port}; its {side} ports are {', '.join(have) or 'none'}"
    )
    return InvalidArgument.field(field, description, reason="PORT_NOT_HELD")


def _fill_auto(
    slots: list[_Slot],
    ledger: PortLedger,
    choose_target: TargetChooser,
    busy: Callable[[Port], bool] | None,
) -> None:
    claimed: dict[Protocol, set[int]] = {p: set() for p in Protocol}
    targets: dict[Protocol, set[int]] = {p: set() for p in Protocol}
    for slot in slots:
        if slot.published is not None:
            claimed[slot.protocol].add(slot.published)
        if slot.target is not None:
            targets[slot.protocol].add(slot.target)
    for slot in slots:
        if slot.published is None:
            slot.published = ledger.allocate(slot.protocol, claimed[slot.protocol], busy)
            claimed[slot.protocol].add(slot.published)
        if slot.target is None:
            slot.target = choose_target(slot.protocol, _all(targets))
            targets[slot.protocol].add(slot.target)


def _all(sets: dict[Protocol, set[int]]) -> Collection[int]:
    # Auto targets stay distinct across protocols too, so PORT_i values never repeat.
    return set().union(*sets.values())
