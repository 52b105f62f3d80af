"""Images: pull from registries (mirrors first), keep records, resolve names, remove, GC layers.

A pull resolves the manifest (an index is narrowed to the host platform), fetches the config,
downloads the missing layers concurrently (each verified while streaming, into a temp file) and
unpacks them into the shared layer store, then writes the record. Records keep the names the
user asked for, even when a mirror served the bytes.
"""

from __future__ import annotations

import base64
import json
import logging
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import FIRST_EXCEPTION, ThreadPoolExecutor, wait
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from crio_py import faults, metrics
from crio_py.config import Config, RegistriesConfig
from crio_py.errors import CrioError, FailedPrecondition, Internal, InvalidArgument, NotFound, Unavailable
from crio_py.image.model import AuthConfig, DirUsage, FsUsage, ImageRecord, user_of
from crio_py.image.pause import build_pause_layer, config_digest
from crio_py.registry.reference import Reference, looks_like_id, parse
from crio_py.state import RecordStore, check_field_types, write_atomic
from crio_py.storage.layers import LayerStore, chain_ids
from crio_py.storage.usage import tree_usage

if TYPE_CHECKING:
    from crio_py.registry import client as registry

log = logging.getLogger(__name__)
KIND = "images"
# ImageFsInfo is polled by kubelet; walking the store that often would cost more than it tells.
FS_USAGE_TTL = 10.0


class ImageManager:
    """Owns image records, their configs and the layer store."""

    def __init__(self, config: Callable[[], Config], store: RecordStore):
        self._config = config
        self._store = store
        root = Path(config().root)
        self._root = root
        self.layers = LayerStore(root)
        self._configs = root / "images"
        self._configs.mkdir(parents=True, exist_ok=True, mode=0o700)
        # ImageFsInfo names it as the containers' filesystem before the first container exists:
        # kubelet looks its device up (cAdvisor) and fails its image GC and eviction on a missing path.
        (root / "containers").mkdir(exist_ok=True)
        self._images: dict[str, ImageRecord] = {}
        self._lock = threading.RLock()
        self._pull_locks: dict[str, threading.Lock] = {}
        # Layers of pulls not yet recorded: no image wants them yet, but GC must leave them be.
        self._held: Counter[str] = Counter()
        self._in_use: Callable[[str], bool] = lambda _id: False
        self._fs_usage: tuple[float, FsUsage] | None = None
        for image_id, record in store.load_all(KIND).items():
            try:
                image = ImageRecord.from_record(record)
                check_field_types(image)
                if image.id != "sha256:" + image_id:
                    raise ValueError(f"the record is of image {image.id!r}")
                self._images[image.id] = image
            except Exception as exc:  # whatever a record holds, the daemon starts and serves
                store.quarantine(KIND, image_id, exc)
        log.info("images restored", extra={"count": len(self._images)})
        self._collect_leftovers()

    def _collect_leftovers(self) -> None:
        """Drop what a crash left between a pull's first layer and its record: layers and configs
        no image wants, and interrupted config writes."""
        self._gc_layers()
        for path in self._configs.iterdir():
            orphan = path.suffix == ".json" and "sha256:" + path.stem not in self._images
            if orphan or path.name.endswith(".tmp"):
                path.unlink(missing_ok=True)

    def set_in_use_check(self, fn: Callable[[str], bool]) -> None:
        """``fn(image_id)`` says whether a container uses the image (then it cannot be removed)."""
        self._in_use = fn

    # ---- lookups -----------------------------------------------------------------------

    def list(self) -> list[ImageRecord]:
        with self._lock:
            return list(self._images.values())

    def find(self, ref_or_id: str) -> ImageRecord | None:
        """By tag, digest reference, full id or unique id prefix; None when unknown."""
        if not ref_or_id:
            return None
        with self._lock:
            images = list(self._images.values())
        if looks_like_id(ref_or_id):
            want = ref_or_id if ref_or_id.startswith("sha256:") else "sha256:" + ref_or_id
            matches = [i for i in images if i.id.startswith(want)]
            if len(matches) == 1:
                return matches[0]
        try:
            ref = parse(ref_or_id)
        except CrioError:
            return None
        for image in images:
            if (ref.digest and ref.digested(ref.digest) in image.repo_digests) or (
                not ref.digest and ref.tagged() in image.repo_tags
            ):
                return image
        return None

    def get(self, ref_or_id: str) -> ImageRecord:
        image = self.find(ref_or_id)
        if image is None:
            raise NotFound(f"image {ref_or_id!r} not found")
        return image

    def image_config(self, image_id: str) -> dict[str, Any]:
        """The image's OCI config JSON."""
        try:
            return json.loads((self._configs / f"{image_id.removeprefix('sha256:')}.json").read_bytes())
        except FileNotFoundError:
            raise NotFound(f"image {image_id}: its config is missing from the store") from None

    def lowerdirs(self, image_id: str) -> list[Path]:
        """Overlay lowerdirs of the image, topmost layer first; Internal if the store lost one."""
        image = self.get(image_id)
        missing = [c for c in image.chain_ids if not self.layers.has(c)]
        if missing:
            raise Internal(f"image {image.id}: layer {missing[0]} is missing from the store; remove the image and "
                           "pull it again")
        return [self.layers.diff_dir(c) for c in reversed(image.chain_ids)]

    # ---- pull --------------------------------------------------------------------------

    def pull(self, ref_text: str, auth: AuthConfig | None = None) -> ImageRecord:
        """Pull ``ref_text`` (mirrors first, then its registry) and return its record.

        The configured pause image never fails to pull: when no registry has it, the local
        one is used (or built), so that an offline node still runs pods.
        """
        ref = parse(ref_text)
        with self._lock:
            pull_lock = self._pull_locks.setdefault(str(ref), threading.Lock())
        with pull_lock:
            try:
                image = self._pull_or_local_pause(ref, ref_text, auth)
            except CrioError as exc:
                metrics.IMAGE_PULL_FAILURES.labels(exc.code).inc()
                raise
            except OSError as exc:  # the store's disk: full, read-only, not ours to write
                metrics.IMAGE_PULL_FAILURES.labels(Internal.code).inc()
                raise Internal(f"image {ref}: cannot write the image store: {exc}") from None
        metrics.IMAGE_PULL_SUCCESSES.inc()
        return image

    def _pull_or_local_pause(self, ref: Reference, ref_text: str, auth: AuthConfig | None) -> ImageRecord:
        try:
            return self._pull(ref, auth)
        except CrioError as exc:
            if ref != parse(self._config().pause_image):
                raise
            log.warning("pause image not pullable; using the local one", extra={"image": str(ref),
                        "error": exc.message})
            return self.find(ref_text) or self._build_pause(ref_text)

    def _pull(self, ref: Reference, auth: AuthConfig | None) -> ImageRecord:
        cfg = self._config().registries
        touched: set[str] = set()
        try:
            return self._pull_from_endpoints(ref, auth, cfg, touched)
        finally:
            # Layers of a failed pull that no image wants go (once the pull is recorded, it wants them
            # all); kept until every endpoint was tried, the next may share them.
            with self._lock:
                self._gc_layers(touched)

    def _pull_from_endpoints(
        self, ref: Reference, auth: AuthConfig | None, cfg: RegistriesConfig, touched: set[str]
    ) -> ImageRecord:
        """The first endpoint that serves the image whole wins; the layers it unpacks join ``touched``."""
        # The HTTP stack (httpx, anyio, asyncio...) costs the daemon ~7 MiB: load it at the first pull.
        from crio_py.registry import client as registry

        failures: list[tuple[str, CrioError]] = []
        for endpoint in registry.endpoints_for(ref, cfg.mirrors, cfg.insecure):
            host = _host(endpoint.base_url)
            creds = _credentials(ref, auth, cfg.auth_file, host)
            insecure = endpoint.base_url.startswith("http://") or registry.is_insecure(host, cfg.insecure)
            with registry.new_http_client(insecure=insecure) as http:
                session = registry.RegistrySession(http, endpoint, ref.path, creds)
                try:
                    image = self._pull_from(session, ref, cfg.max_concurrent_downloads, touched)
                except CrioError as exc:
                    failures.append((endpoint.base_url, exc))
                    if not endpoint.is_mirror:
                        break
                    log.info("mirror failed; trying the next",
                             extra={"mirror": endpoint.base_url, "error": exc.message})
                    continue
            log.info("image pulled", extra={"image": str(ref), "id": image.id, "from": endpoint.base_url})
            return image
        raise _every_endpoint_failed(ref, failures)

    def _pull_from(
        self, session: registry.RegistrySession, ref: Reference, parallel: int, touched: set[str]
    ) -> ImageRecord:
        from crio_py.registry import client as registry

        media, top_digest, raw = session.manifest(ref.object)
        manifest = _json_object(raw, f"the manifest of {ref}")
        if media in registry.INDEX_TYPES or "manifests" in manifest:
            desc = registry.choose_platform(manifest)
            media, _digest, raw = session.manifest(desc["digest"])
            manifest = _json_object(raw, f"the manifest {desc['digest']} of {ref}")
        config_desc = manifest.get("config") or {}
        # Docker schema 1 (and anything else without a config blob) is not an image we can run.
        if manifest.get("schemaVersion") != 2 or "digest" not in config_desc:
            raise InvalidArgument(
                f"image {ref}: unsupported manifest ({media or 'no media type'}); "
                "only OCI and Docker schema 2 images can be pulled"
            )
        config_raw = session.blob_bytes(config_desc["digest"], int(config_desc["size"]))
        config = _json_object(config_raw, f"the config of {ref}")
        if (config.get("os"), config.get("architecture")) != registry.HOST_PLATFORM:
            raise NotFound(
                f"image {ref} is for {config.get('os')}/{config.get('architecture')}, this node is "
                f"{'/'.join(registry.HOST_PLATFORM)}"
            )
        diff_ids = (config.get("rootfs") or {}).get("diff_ids") or []
        layers = manifest.get("layers") or []
        if len(diff_ids) != len(layers):
            raise Internal(f"image {ref}: {len(layers)} layers but {len(diff_ids)} diff ids in its config")
        chains = chain_ids(diff_ids)
        touched.update(chains)
        with self._holding(chains):
            with ThreadPoolExecutor(max_workers=parallel, thread_name_prefix="pull") as pool:
                futures = [
                    pool.submit(self._ensure_layer, session, desc, diff_id, chain)
                    for desc, diff_id, chain in zip(layers, diff_ids, chains, strict=True)
                ]
                done, _pending = wait(futures, return_when=FIRST_EXCEPTION)
                for future in futures:
                    future.cancel()  # after a failure, layers not started are not fetched for nothing
                for future in futures:
                    if future in done:
                        future.result()
            size = sum(int(d.get("size", 0)) for d in layers) + int(config_desc["size"])
            return self._commit(config_desc["digest"], config_raw, config, chains, size, ref, top_digest,
                                annotations=manifest.get("annotations") or {})

    @contextmanager
    def _holding(self, chains: list[str]) -> Iterator[None]:
        """Keep ``chains`` out of layer GC until the image using them is recorded."""
        with self._lock:
            self._held.update(chains)
        try:
            yield
        finally:
            with self._lock:
                self._held.subtract(chains)
                self._held = +self._held  # drop the zero counts

    def _ensure_layer(self, session: registry.RegistrySession, desc: dict[str, Any], diff_id: str, chain: str) -> None:
        with self.layers.lock(chain):
            if self.layers.has(chain):
                metrics.IMAGE_LAYERS_REUSED.inc()
                return
            started = time.monotonic()
            try:
                # Unpacked while it downloads: the store verifies the blob before showing the layer.
                with session.open_blob(desc["digest"], int(desc["size"])) as blob:
                    self.layers.add(chain, diff_id, blob)
            except OSError as exc:
                raise Internal(f"layer {desc['digest']}: {exc}") from None
            metrics.IMAGE_PULL_BYTES.inc(int(desc["size"]))
            log.debug("layer unpacked", extra={"chain_id": chain, "seconds": round(time.monotonic() - started, 3)})

    def _commit(
        self,
        image_id: str,
        config_raw: bytes,
        config: dict[str, Any],
        chains: list[str],
        size: int,
        ref: Reference,
        repo_digest: str,
        annotations: dict[str, str],
        pinned: bool = False,
    ) -> ImageRecord:
        write_atomic(self._configs / f"{image_id.removeprefix('sha256:')}.json", config_raw)
        uid, username = user_of(config)
        with self._lock:
            tag = ref.tagged()
            # A tag moves: it leaves whatever image held it before.
            for other in self._images.values():
                if other.id != image_id and tag and tag in other.repo_tags:
                    other.repo_tags.remove(tag)
                    self._store.write(KIND, other.id.removeprefix("sha256:"), other.to_record())
            image = self._images.get(image_id) or ImageRecord(
                id=image_id, size=size, uid=uid, username=username, chain_ids=chains,
                annotations=dict(annotations), created_at_ns=time.time_ns(),
                stop_signal=(config.get("config") or {}).get("StopSignal") or "",
            )
            if tag and tag not in image.repo_tags:
                image.repo_tags.append(tag)
            digested = ref.digested(repo_digest) if repo_digest else ""
            if digested and digested not in image.repo_digests:
                image.repo_digests.append(digested)
            image.pinned = image.pinned or pinned
            faults.point("PullImage:layers stored")
            self._store.write(KIND, image_id.removeprefix("sha256:"), image.to_record())
            self._images[image_id] = image
        return image

    # ---- the pause image -------------------------------------------------------------------

    def ensure_pause_image(self) -> ImageRecord:
        """The configured pause image: present, else pulled, else built locally from catatonit; pinned
        (also when it was first pulled as an ordinary image, or the configured name changed)."""
        name = self._config().pause_image
        image = self.find(name) or self.pull(name)
        if not image.pinned:
            with self._lock:
                image.pinned = True
                self._store.write(KIND, image.id.removeprefix("sha256:"), image.to_record())
        return image

    def _build_pause(self, name: str) -> ImageRecord:
        ref = parse(name)
        layer, config = build_pause_layer()
        config_raw, image_id = config_digest(config)
        diff_id = config["rootfs"]["diff_ids"][0]
        with self._holding([diff_id]):
            with self.layers.lock(diff_id):
                if not self.layers.has(diff_id):
                    self.layers.add_tar_bytes(diff_id, diff_id, layer)
            return self._commit(image_id, config_raw, config, [diff_id], len(layer), ref, "", {}, pinned=True)

    # ---- remove ------------------------------------------------------------------------

    def remove(self, ref_or_id: str) -> None:
        """Untag (when other tags remain and a tag was named) or delete the image and GC its layers."""
        image = self.find(ref_or_id)
        if image is None:
            return  # removing an unknown image succeeds (CRI semantics)
        with self._lock:
            by_id = image.id.removeprefix("sha256:").startswith(ref_or_id.removeprefix("sha256:"))
            named_tag = None if by_id else parse(ref_or_id).tagged()
            if named_tag in image.repo_tags and len(image.repo_tags) > 1:
                image.repo_tags.remove(named_tag)
                self._store.write(KIND, image.id.removeprefix("sha256:"), image.to_record())
                return
            if self._in_use(image.id):
                raise FailedPrecondition(f"image {ref_or_id!r} ({image.id}) is used by a container")
            del self._images[image.id]
            self._store.delete(KIND, image.id.removeprefix("sha256:"))
            (self._configs / f"{image.id.removeprefix('sha256:')}.json").unlink(missing_ok=True)
            self._gc_layers()
        log.info("image removed", extra={"image": ref_or_id, "id": image.id})

    def _gc_layers(self, candidates: Iterable[str] | None = None) -> None:
        """Remove the layers (of ``candidates``, else all) that no image wants and no pull holds."""
        wanted = {c for image in self._images.values() for c in image.chain_ids} | set(self._held)
        present = set(self.layers.chain_ids())
        for chain in present if candidates is None else present.intersection(candidates):
            if chain not in wanted:
                with self.layers.lock(chain):
                    self.layers.remove(chain)
                faults.point("ImageGC:layer removed")
                log.info("unused layer removed", extra={"chain_id": chain})

    # ---- usage -------------------------------------------------------------------------

    def fs_usage(self) -> FsUsage:
        """Usage of ``<root>/layers`` and ``<root>/containers``, cached for a few seconds."""
        now = time.monotonic()
        cached = self._fs_usage
        if cached and now - cached[0] < FS_USAGE_TTL:
            return cached[1]
        usage = FsUsage(images=_usage(self.layers.root), containers=_usage(self._root / "containers"))
        self._fs_usage = (now, usage)
        return usage


def _every_endpoint_failed(ref: Reference, failures: list[tuple[str, CrioError]]) -> CrioError:
    """One error naming each endpoint tried and why it failed.

    NOT_FOUND when every endpoint that answered said not found (the others unreachable): an
    image missing from the mirror of an offline node is not a network problem. Otherwise the
    kind of the last answer (the upstream's when it answered), UNAVAILABLE when none answered.
    """
    reasons = "; ".join(exc.message if url in exc.message else f"{url}: {exc.message}" for url, exc in failures)
    answered = [exc for _url, exc in failures if not isinstance(exc, Unavailable)]
    if answered and all(isinstance(exc, NotFound) for exc in answered):
        return NotFound(f"image {ref}: {reasons}")
    return type(answered[-1] if answered else failures[-1][1])(f"image {ref}: {reasons}")


def _host(url: str) -> str:
    return url.split("://", 1)[-1].split("/", 1)[0]


def _credentials(ref: Reference, auth: AuthConfig | None, auth_file: str, host: str) -> registry.Credentials | None:
    """Credentials from the request, else the auth file's for ``host`` (a mirror's own) or the image's registry."""
    from crio_py.registry import client as registry

    if auth and (auth.username or auth.auth or auth.identity_token or auth.registry_token):
        user, password = auth.username, auth.password
        if auth.auth and not user:
            user, password = _user_password(auth.auth, "the request's auth")
        return registry.Credentials(user, password, auth.identity_token, auth.registry_token)
    if not auth_file:
        return None
    try:
        auths = json.loads(Path(auth_file).read_text()).get("auths") or {}
    except (OSError, ValueError) as exc:
        log.warning("auth file unreadable", extra={"path": auth_file, "error": str(exc)})
        return None
    hub = "https://index.docker.io/v1/" if ref.domain == "docker.io" else ""
    for key in (host, f"https://{host}", ref.domain, f"https://{ref.domain}", hub):
        entry = auths.get(key) or {}
        if entry.get("identitytoken"):
            return registry.Credentials(identity_token=entry["identitytoken"])
        if entry.get("auth"):
            return registry.Credentials(*_user_password(entry["auth"], f"{auth_file} ({key})"))
    return None


def _json_object(raw: bytes, what: str) -> dict[str, Any]:
    """``raw`` parsed as a JSON object; Internal naming ``what`` when it is not one."""
    try:
        value = json.loads(raw)
    except ValueError:
        value = None
    if not isinstance(value, dict):
        raise Internal(f"{what} is not a JSON object")
    return value


def _user_password(encoded: str, where: str) -> tuple[str, str]:
    """(user, password) of a base64 ``user:password``; InvalidArgument naming ``where`` if garbled."""
    try:
        user, _, password = base64.b64decode(encoded, validate=True).decode().partition(":")
    except ValueError:  # binascii.Error and UnicodeDecodeError both are
        raise InvalidArgument(f"credentials in {where} are not base64 of user:password") from None
    return user, password


def _usage(path: Path) -> DirUsage:
    used, inodes = tree_usage(path)
    return DirUsage(mountpoint=str(path), used_bytes=used, inodes_used=inodes)
