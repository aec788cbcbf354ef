package io.github.lora4j.serve;

import io.github.lora4j.LoraLinear;
import io.github.lora4j.model.LoraModel;
import io.github.lora4j.serve.StoreEntry.Attempt;
import io.github.lora4j.serve.StoreEntry.State;
import io.github.lora4j.serve.StoreFiles.SizeChanged;
import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayDeque;
import java.util.ArrayList;
import java.util.Collections;
import java.util.HashMap;
import java.util.Iterator;
import java.util.LinkedHashMap;
import java.util.LinkedHashSet;
import java.util.List;
import java.util.Locale;
import java.util.Map;
import java.util.Objects;
import java.util.OptionalLong;
import java.util.concurrent.atomic.AtomicBoolean;
import java.util.concurrent.locks.Condition;
import java.util.concurrent.locks.ReentrantLock;
import java.util.function.Consumer;
import org.nd4j.linalg.api.ndarray.INDArray;

/**
 * Many PEFT adapters served over one {@link LoraModel} under a memory budget: adapters are registered by name and
 * directory without being read, loaded into the model when a batch first names them, and the least recently used
 * ones that no open batch needs are evicted when room is needed. Batches run concurrently; each pins the adapters it
 * names until it is closed, so an adapter is never removed under a batch.
 *
 * <pre>{@code
 * model.applyLora(config, List.of("q_proj", "v_proj"));          // which modules adapters cover
 * model.eval();
 * try (AdapterStore store = new AdapterStore(model, 64L << 20)) { // 64 MiB of A and B resident at most
 *     store.register("tenant-a", Path.of("adapters/tenant-a"));    // no file is read yet
 *     store.register("tenant-b", Path.of("adapters/tenant-b"));
 *     try (AdapterStore.Batch batch = store.batch(new String[] {"tenant-a", "tenant-b", null})) {
 *         INDArray q = batch.forward("model.layers.0.self_attn.q_proj", x);   // x [3, in]; row 2: base model
 *     }
 * }
 * }</pre>
 *
 * <h2>What is checked when</h2>
 * <ul>
 *   <li>{@link #register}: the name (not blank, not {@value LoraLinear#BASE_MODEL}, not registered, not an adapter the
 *   model holds that the store does not manage) and that the directory exists; no file is opened, so thousands of
 *   adapters register in milliseconds.</li>
 *   <li>The first batch that names an adapter <em>sizes</em> it: reads {@code adapter_config.json} and the
 *   safetensors header (not the tensors) and checks them against the model with {@code PeftAdapterFiles.load}'s own
 *   rules, plus the store's: no full tensors ({@code modules_to_save}), every LoRA module of the model covered, and a
 *   size within the budget. An adapter refused here never reaches the model.</li>
 *   <li>Loading reads the tensors ({@link io.github.lora4j.io.PeftAdapterFiles#load}: all or nothing, non-finite
 *   values refused). A resident adapter is not read again, so a file changed on disk takes effect only after an
 *   eviction; re-register the name to serve a new version.</li>
 * </ul>
 *
 * <h2>Size and budget</h2>
 * An adapter's size is the bytes of its {@code A} and {@code B} as the model holds them: per LoRA module
 * {@code r·(in + out)} elements of the module's data type (an F16 file loaded into a FLOAT model counts 4 bytes per
 * element). At no time do the adapters in the model, being loaded into it or being removed from it exceed the budget.
 * Not counted: ND4J's array headers, and the gradient buffers {@link LoraLinear} keeps beside each adapter's
 * {@code A} and {@code B} (one more copy of each, today allocated with the adapter), so the process's native memory
 * for resident adapters is about twice the budget.
 *
 * <h2>Batches, pins and eviction</h2>
 * {@link #batch} looks every named adapter up, sizes the unknown ones, then waits (in arrival order) until the
 * distinct adapters of all open batches together fit the budget, pins its adapters, and loads the missing ones, each
 * by exactly one thread however many batches ask for it at the same moment (the others wait and share its outcome).
 * A load makes room by evicting resident adapters that no batch pins, least recently used first; "used" means named
 * by a batch that was admitted. Because open batches together never need more than the budget, a load always finds
 * room once the evictions and loads already running have finished: batches cannot wait for each other in a circle.
 * A batch whose own adapters need more than the budget is refused at once.
 *
 * <h2>Failures</h2>
 * An adapter that cannot be served (not registered, a missing or corrupt file, a shape that does not fit, larger
 * than the budget) fails the batch that names it with an {@link AdapterStoreException}. Every adapter of the batch is
 * tried, so the exception lists all that cannot be served, each with its cause, and the rows that named them; the
 * batch then holds nothing, the adapters that did load stay resident for the next batch, and no other batch or
 * adapter is disturbed. A failed load is not remembered: the next batch that names the
 * adapter tries again (a file may be fixed meanwhile), but batches waiting for the same load share its failure.
 *
 * <h2>Unregistering and closing</h2>
 * {@link #unregister} takes effect at once for new batches (the name is unknown to them), while open batches finish
 * with the adapter they pinned; it leaves the model when the last of them is closed. Registering the name again at
 * once is allowed: the new registration loads only after the old adapter has left the model. {@link #close()} does
 * the same for every adapter.
 *
 * <h2>The model</h2>
 * The store owns the adapters it loads and names them as registered. While it serves the model, do not change the
 * model's structure (apply LoRA, modules_to_save, merge, {@code mergeAndUnload}) or add or delete adapters under
 * names the store manages (an adapter deleted with {@code model.deleteAdapter} behind the store's back is forgotten
 * when the store next meets its absence: a batch's {@link Batch#forward} then fails with an
 * {@link IllegalStateException} naming it, an eviction skips it, and its bytes are freed; the next batch that names it
 * loads it again; {@link #unregister} is the way to stop serving one); pass rows to {@link LoraModel#forward(String, INDArray, String[])} only while an open
 * {@link Batch} pins their adapters ({@link Batch#forward} does that). Adding or removing an adapter takes each
 * module's exclusive lock, one module at a time; forwards of open batches take shared locks and never see an
 * adapter half-loaded, because the store hands an adapter to batches only once it is complete in every module and
 * removes only adapters no batch pins. The model must be in eval mode and unmerged for mixed batches.
 *
 * <h2>Threads</h2>
 * Every method is thread-safe. Waits (for budget, for another thread's load, for an old registration to leave the
 * model) are interruptible: an interrupted {@link #batch} releases what it pinned, keeps the thread's interrupt flag
 * and throws {@link IllegalStateException}. A thread that holds an open batch and opens another that would have to
 * wait is refused with {@link IllegalStateException} instead of waiting, since it could wait for itself.
 */
public final class AdapterStore implements AutoCloseable {

    private final LoraModel model;
    private final long budget;

    private final ReentrantLock lock = new ReentrantLock();
    /** Signalled on every change a waiting thread may be waiting for (pins, loads, evictions, admissions). */
    private final Condition changed = lock.newCondition();

    // Everything below is guarded by lock.
    private final Map<String, StoreEntry> registry = new HashMap<>();
    /** Name → the registration whose adapter holds that name in the model (loading with room reserved, resident, evicting). */
    private final Map<String, StoreEntry> inModel = new HashMap<>();
    /** Resident entries, least recently used first. */
    private final LinkedHashSet<StoreEntry> lru = new LinkedHashSet<>();
    /** Bytes of the entries in {@link #inModel}: never above the budget. */
    private long reserved;
    /** Bytes of the entries being evicted (part of {@link #reserved}, soon freed). */
    private long evicting;
    /** Bytes of the pinned entries: never above the budget, so every load finds room eventually. */
    private long committed;
    /** Batches waiting to be admitted, in arrival order. */
    private final ArrayDeque<Object> queue = new ArrayDeque<>();
    /** Open batches per thread that opened them. */
    private final Map<Thread, Integer> holders = new HashMap<>();
    private boolean closed;
    /** Runs before a load reads its files, room reserved; tests hold a load here so that batches meet it. */
    volatile Consumer<String> beforeLoad = name -> { };
    private long batches;
    private long hits;
    private long misses;
    private long rowHits;
    private long rowMisses;
    private long loads;
    private long loadFailures;
    private long evictions;

    /**
     * A store over {@code model}'s LoRA modules.
     *
     * @param model       a model with LoRA applied to linear modules only (mixed batches are computed for linear
     *                    modules), e.g. by {@link LoraModel#applyLora}: the store loads each adapter into those modules
     * @param budgetBytes the most bytes of adapters ({@code A} and {@code B}) resident at once, {@code > 0}
     * @throws IllegalArgumentException for a budget below 1, a model without LoRA modules, or one with LoRA
     *                                  embeddings or conv2d modules
     */
    public AdapterStore(LoraModel model, long budgetBytes) {
        this.model = Objects.requireNonNull(model, "model must not be null");
        if (budgetBytes < 1) {
            throw new IllegalArgumentException("budgetBytes: expected at least 1 byte, got " + budgetBytes);
        }
        if (model.loraModules().isEmpty()) {
            throw new IllegalArgumentException("the model has no LoRA modules, so the store would not know which "
                    + "modules an adapter covers; apply LoRA first (applyLora(config, targets)), modules: "
                    + model.modulePaths());
        }
        if (!model.loraEmbeddings().isEmpty() || !model.loraConvs().isEmpty()) {
            throw new IllegalArgumentException("the store serves mixed batches, which lora4j computes for linear "
                    + "modules; expected a model whose LoRA modules are all linear, got LoRA embeddings "
                    + model.loraEmbeddings().keySet() + " and conv2d modules " + model.loraConvs().keySet());
        }
        this.budget = budgetBytes;
    }

    /** {@return the model the store loads adapters into (the live object)} */
    public LoraModel model() {
        return model;
    }

    /** {@return the budget in bytes} */
    public long budgetBytes() {
        return budget;
    }

    // ---------------------------------------------------------------- registration

    /**
     * Registers the PEFT adapter in {@code dir} under {@code name} without reading it (see the class comment for
     * what is checked when). The name is how batches and the model call it.
     *
     * @param name a new name: not blank, not {@value LoraLinear#BASE_MODEL}, not an adapter the model holds that
     *             the store does not manage (such as {@code "default"} from {@code applyLora})
     * @param dir  an existing directory, expected to hold {@code adapter_config.json} and
     *             {@code adapter_model.safetensors}
     * @throws IllegalArgumentException for a bad or taken name, or a path that is not a directory
     * @throws IllegalStateException    after {@link #close()}
     */
    public void register(String name, Path dir) {
        Objects.requireNonNull(name, "adapter name must not be null");
        Objects.requireNonNull(dir, "dir must not be null");
        if (name.isBlank() || name.equals(LoraLinear.BASE_MODEL) || name.equals(StoreFiles.PROBE_NAME)) {
            throw new IllegalArgumentException("adapter name: expected a non-blank name other than '"
                    + LoraLinear.BASE_MODEL + "' (the base model's rows) and '" + StoreFiles.PROBE_NAME
                    + "' (the store's own), got '" + name + "'");
        }
        Path absolute = dir.toAbsolutePath().normalize();
        if (!Files.isDirectory(absolute)) {
            throw new IllegalArgumentException("adapter '" + name + "': expected a directory holding "
                    + "adapter_config.json and adapter_model.safetensors, got " + absolute
                    + (Files.exists(absolute) ? " (not a directory)" : " (missing)"));
        }
        lock.lock();
        try {
            requireOpen();
            if (registry.containsKey(name)) {
                throw new IllegalArgumentException("adapter '" + name + "' is already registered (directory "
                        + registry.get(name).dir + "); unregister it first to replace it");
            }
            if (!inModel.containsKey(name) && model.adapterNames().contains(name)) {
                throw new IllegalArgumentException("adapter '" + name + "' is already in the model and not the "
                        + "store's; choose another name (the store names adapters in the model as registered)");
            }
            registry.put(name, new StoreEntry(name, absolute));
        } finally {
            lock.unlock();
        }
    }

    /**
     * Unregisters {@code name}: batches opened from now on get "not registered" for it; open batches that pinned it
     * finish with it, and it leaves the model when the last of them is closed (at once if none).
     *
     * @param name a registered adapter
     * @throws IllegalArgumentException if it is not registered
     */
    public void unregister(String name) {
        Objects.requireNonNull(name, "adapter name must not be null");
        List<StoreEntry> victims = new ArrayList<>();
        lock.lock();
        try {
            StoreEntry e = registry.remove(name);
            if (e == null) {
                throw new IllegalArgumentException("adapter '" + name + "' is not registered (" + registry.size()
                        + " adapters are)");
            }
            e.retired = true;
            settle(e, victims);
            evict(victims);
        } finally {
            lock.unlock();
        }
    }

    /**
     * {@return whether {@code name} is registered}
     *
     * @param name an adapter name
     */
    public boolean isRegistered(String name) {
        lock.lock();
        try {
            return registry.containsKey(name);
        } finally {
            lock.unlock();
        }
    }

    /** {@return the number of registered adapters} */
    public int registeredCount() {
        lock.lock();
        try {
            return registry.size();
        } finally {
            lock.unlock();
        }
    }

    /**
     * {@return the resident size of registered adapter {@code name} in bytes, or empty until a batch has sized it}
     *
     * @param name a registered adapter
     * @throws IllegalArgumentException if it is not registered
     */
    public OptionalLong sizeOf(String name) {
        lock.lock();
        try {
            StoreEntry e = registry.get(name);
            if (e == null) {
                throw new IllegalArgumentException("adapter '" + name + "' is not registered");
            }
            return e.size < 0 ? OptionalLong.empty() : OptionalLong.of(e.size);
        } finally {
            lock.unlock();
        }
    }

    /**
     * {@return the adapters resident in the model, least recently used first; a copy} Adapters being loaded or
     * evicted are not listed.
     */
    public List<String> residentAdapters() {
        lock.lock();
        try {
            List<String> out = new ArrayList<>(lru.size());
            lru.forEach(e -> out.add(e.name));
            return out;
        } finally {
            lock.unlock();
        }
    }

    /** {@return the bytes of adapters in the model, being loaded or being removed: never above the budget} */
    public long residentBytes() {
        lock.lock();
        try {
            return reserved;
        } finally {
            lock.unlock();
        }
    }

    /** {@return the counters since the store was made, and the current residency} */
    public Stats stats() {
        lock.lock();
        try {
            return new Stats(batches, hits, misses, rowHits, rowMisses, loads, loadFailures, evictions, lru.size(),
                    reserved, budget, registry.size());
        } finally {
            lock.unlock();
        }
    }

    // ---------------------------------------------------------------- batches

    /**
     * Opens a batch whose row {@code i} uses adapter {@code adapterPerRow[i]} (null or {@value LoraLinear#BASE_MODEL}:
     * the base model): sizes the adapters not yet sized, waits until the batch fits the budget beside the other open
     * batches, pins its adapters and loads the missing ones. Close the batch (try-with-resources) to unpin them.
     *
     * @param adapterPerRow one name per row; copied
     * @return the open batch, its adapters resident until it is closed
     * @throws AdapterStoreException    if some named adapters cannot be served; lists each with its cause and the
     *                                  failed rows; nothing is pinned then
     * @throws IllegalArgumentException if the batch's distinct adapters together need more than the budget
     * @throws IllegalStateException    after {@link #close()}, when interrupted while waiting, or when this thread
     *                                  holds an open batch and this one would have to wait
     */
    public Batch batch(String[] adapterPerRow) throws AdapterStoreException {
        Objects.requireNonNull(adapterPerRow, "adapterPerRow must not be null");
        String[] rows = adapterPerRow.clone();
        Map<String, Integer> rowCounts = new LinkedHashMap<>();
        for (String n : rows) {
            if (n != null && !n.equals(LoraLinear.BASE_MODEL)) {
                rowCounts.merge(n, 1, Integer::sum);
            }
        }
        Map<String, Exception> failures = new LinkedHashMap<>();
        List<StoreEntry> entries = new ArrayList<>(rowCounts.size());
        lock.lock();
        try {
            requireOpen();
            for (String n : rowCounts.keySet()) {
                StoreEntry e = registry.get(n);
                if (e == null) {
                    failures.put(n, notRegistered(n));
                } else {
                    entries.add(e);
                }
            }
        } finally {
            lock.unlock();
        }
        // Every adapter is tried, so one exception lists all that cannot be served; the others load meanwhile.
        sizeUnknown(entries, failures);
        entries.removeIf(e -> failures.containsKey(e.name));
        Batch batch = new Batch(rows, entries);
        List<StoreEntry> mine = admit(batch, rowCounts, failures);
        boolean ok = false;
        try {
            loadAll(batch.entries, mine, failures);
            for (Exception f : failures.values()) {
                if (f instanceof WaitRefused w) {
                    throw w;                        // the thread's wait, not the adapter: no AdapterStoreException
                }
            }
            ok = failures.isEmpty();
        } finally {
            if (!ok) {
                release(batch.entries, null);
            }
        }
        if (!failures.isEmpty()) {
            throw failed(rows, failures, rowCounts.size());
        }
        lock.lock();
        try {
            holders.merge(batch.owner, 1, Integer::sum);
        } finally {
            lock.unlock();
        }
        return batch;
    }

    /**
     * One batch through one module: {@link #batch} then {@link Batch#forward}, closed before returning.
     *
     * @param module        a linear module of the model
     * @param x             {@code [n, in]} (or {@code [..., in]}); not changed
     * @param adapterPerRow one name per row
     * @return a new array {@code [n, out]}
     * @throws AdapterStoreException as {@link #batch}
     */
    public INDArray forward(String module, INDArray x, String[] adapterPerRow) throws AdapterStoreException {
        try (Batch b = batch(adapterPerRow)) {
            return b.forward(module, x);
        }
    }

    /**
     * Stops serving: every adapter is unregistered (see {@link #unregister}), so those no batch pins leave the model
     * now and the others when their batches close. Later {@link #register} and {@link #batch} calls are refused.
     * Closing again does nothing.
     */
    @Override
    public void close() {
        List<StoreEntry> victims = new ArrayList<>();
        lock.lock();
        try {
            if (closed) {
                return;
            }
            closed = true;
            for (StoreEntry e : registry.values()) {
                e.retired = true;
                settle(e, victims);
            }
            registry.clear();
            changed.signalAll();
            evict(victims);
        } finally {
            lock.unlock();
        }
    }

    // ---------------------------------------------------------------- sizing

    /** Sizes every entry whose size is unknown (in this thread; the reads are cheap), recording failures. */
    private void sizeUnknown(List<StoreEntry> entries, Map<String, Exception> failures) {
        List<StoreEntry> unknown = new ArrayList<>();
        lock.lock();
        try {
            for (StoreEntry e : entries) {
                if (e.size < 0) {
                    unknown.add(e);
                }
            }
        } finally {
            lock.unlock();
        }
        for (StoreEntry e : unknown) {
            try {
                long bytes = StoreFiles.size(model, e.name, e.dir);
                lock.lock();
                try {
                    e.size = bytes;
                } finally {
                    lock.unlock();
                }
            } catch (IOException | RuntimeException ex) {
                failures.put(e.name, ex);
            }
        }
    }

    // ---------------------------------------------------------------- admission and pins

    /**
     * Waits until the batch is first in line and its adapters fit beside those of the open batches, then pins them,
     * counts hits and misses, marks the hits used and claims the loads of absent adapters (returned: this thread
     * loads them). Adapters unregistered meanwhile become failures; nothing is pinned then.
     */
    private List<StoreEntry> admit(Batch batch, Map<String, Integer> rowCounts, Map<String, Exception> failures) {
        Object ticket = new Object();
        lock.lock();
        try {
            queue.add(ticket);
            try {
                while (true) {
                    requireOpen();
                    long need = 0;
                    for (Iterator<StoreEntry> it = batch.entries.iterator(); it.hasNext(); ) {
                        StoreEntry e = it.next();
                        Exception refused = e.retired ? notRegistered(e.name)
                                : e.size < 0 ? new SizeChanged("adapter '" + e.name + "' (" + e.dir + ") changed on "
                                + "disk while the batch was opening; it is sized again when next asked for")
                                : e.size > budget ? new IllegalArgumentException(String.format(Locale.ROOT, "adapter "
                                + "'%s' (%s) needs %,d bytes resident (A and B of %d modules), more than the store's "
                                + "whole budget of %,d bytes; raise the budget", e.name, e.dir, e.size,
                                model.loraModules().size(), budget))
                                : null;
                        if (refused != null) {
                            failures.put(e.name, refused);
                            it.remove();
                        } else {
                            need += e.size;
                        }
                    }
                    if (need > budget) {
                        throw new IllegalArgumentException(String.format(Locale.ROOT, "the batch names %d distinct "
                                + "adapters needing %,d bytes resident at once, more than the budget of %,d bytes; "
                                + "split the batch or raise the budget", batch.entries.size(), need, budget));
                    }
                    long extra = 0;
                    for (StoreEntry e : batch.entries) {
                        extra += e.pins == 0 ? e.size : 0;
                    }
                    boolean fits = committed + extra <= budget;
                    boolean nested = holders.containsKey(batch.owner);
                    // A thread that holds a batch never waits here (it could wait for itself), so it skips the line;
                    // so does a batch whose adapters are all pinned already (it takes no budget from anyone).
                    if (fits && (nested || extra == 0 || queue.peek() == ticket)) {
                        break;
                    }
                    if (nested) {
                        throw new WaitRefused(String.format(Locale.ROOT, "this thread holds %d open "
                                + "batch(es), and the new batch's adapters (%,d bytes more) do not fit the budget of "
                                + "%,d bytes beside the %,d bytes the open batches pin; waiting could wait for this "
                                + "thread itself: close the open batch first", holders.get(batch.owner), extra,
                                budget, committed));
                    }
                    await("waiting for budget to open the batch");
                }
            } finally {
                queue.remove(ticket);
                changed.signalAll();
            }
            List<StoreEntry> mine = new ArrayList<>();
            batches++;
            for (StoreEntry e : batch.entries) {
                if (e.pins++ == 0) {
                    e.pinnedBytes = e.size;
                    committed += e.size;
                }
                int count = rowCounts.get(e.name);
                if (e.state == State.RESIDENT) {
                    hits++;
                    rowHits += count;
                    lru.remove(e);
                    lru.add(e);
                } else {
                    misses++;
                    rowMisses += count;
                }
            }
            for (StoreEntry e : batch.entries) {
                if (e.state == State.ABSENT) {
                    claim(e);
                    mine.add(e);
                }
            }
            return mine;
        } finally {
            lock.unlock();
        }
    }

    /** Unpins {@code entries}; those retired and no longer pinned leave the model. */
    private void release(List<StoreEntry> entries, Thread owner) {
        List<StoreEntry> victims = new ArrayList<>();
        lock.lock();
        try {
            for (StoreEntry e : entries) {
                if (--e.pins == 0) {
                    committed -= e.pinnedBytes;
                    settle(e, victims);
                }
            }
            if (owner != null) {
                holders.computeIfPresent(owner, (t, n) -> n == 1 ? null : n - 1);
            }
            changed.signalAll();
            evict(victims);
        } finally {
            lock.unlock();
        }
    }

    /** A retired, unpinned, resident entry is marked for removal (added to {@code victims}). */
    private void settle(StoreEntry e, List<StoreEntry> victims) {
        if (e.retired && e.pins == 0 && e.state == State.RESIDENT) {
            markEvicting(e);
            victims.add(e);
        }
    }

    // ---------------------------------------------------------------- loading

    private void claim(StoreEntry e) {
        e.state = State.LOADING;
        e.attempt = new Attempt();
    }

    /** Loads this thread's claims, then waits for the batch's other adapters (loading them if they became absent). */
    private void loadAll(List<StoreEntry> entries, List<StoreEntry> mine, Map<String, Exception> failures) {
        int next = 0;
        try {
            for (; next < mine.size(); next++) {
                Exception f = load(mine.get(next));
                if (f != null) {
                    failures.put(mine.get(next).name, f);
                }
            }
        } finally {
            // Claims this thread will not load (an Error above) must not keep other batches waiting.
            for (int i = next + 1; i < mine.size(); i++) {
                abandon(mine.get(i));
            }
        }
        for (StoreEntry e : entries) {
            if (!mine.contains(e)) {
                Exception f = awaitResident(e);
                if (f != null) {
                    failures.put(e.name, f);
                }
            }
        }
    }

    private void abandon(StoreEntry e) {
        lock.lock();
        try {
            if (e.state == State.LOADING && !e.attempt.done) {
                finish(e, new IllegalStateException("the load of adapter '" + e.name + "' was abandoned"), true,
                        false);
            }
        } finally {
            lock.unlock();
        }
    }

    /** Waits until {@code e} (pinned by the caller's batch) is resident; its failure, or null. */
    private Exception awaitResident(StoreEntry e) {
        lock.lock();
        try {
            while (true) {
                switch (e.state) {
                    case RESIDENT:
                        return null;
                    case LOADING: {
                        Attempt a = e.attempt;
                        while (!a.done) {
                            await("waiting for another batch's load of adapter '" + e.name + "'");
                        }
                        if (a.failure != null && !a.retry) {
                            return a.failure;
                        }
                        break;
                    }
                    case EVICTING:
                        await("waiting for adapter '" + e.name + "' to be evicted before loading it again");
                        break;
                    case ABSENT:
                        claim(e);
                        lock.unlock();
                        try {
                            return load(e);
                        } finally {
                            lock.lock();
                        }
                    default:
                        throw new AssertionError(e.state);
                }
            }
        } finally {
            lock.unlock();
        }
    }

    /**
     * Loads claimed entry {@code e}: waits until no older registration holds its name in the model and there is
     * room (evicting the least recently used unpinned adapters), reserves its bytes, reads it into the model.
     * Returns its failure, or null; waiting batches are told either way.
     */
    private Exception load(StoreEntry e) {
        boolean reservedRoom = false;
        Exception failure = null;
        boolean retry = false;
        boolean finished = false;
        try {
            try {
                reserveRoom(e);
                reservedRoom = true;
                beforeLoad.accept(e.name);
                StoreFiles.load(model, e.name, e.dir, e.reservedBytes);
            } catch (IOException | RuntimeException ex) {
                failure = ex;
                retry = ex instanceof WaitRefused;
            }
            lock.lock();
            try {
                finish(e, failure, retry, reservedRoom);
                finished = true;
            } finally {
                lock.unlock();
            }
            return failure;
        } finally {
            if (!finished) {
                // An Error: tell the waiting batches (they try again) before it propagates.
                lock.lock();
                try {
                    finish(e, new IllegalStateException("the load of adapter '" + e.name + "' failed"), true,
                            reservedRoom);
                } finally {
                    lock.unlock();
                }
            }
        }
    }

    /** Under the lock: records the outcome of a load of {@code e} and wakes the waiting batches. */
    private void finish(StoreEntry e, Exception failure, boolean retry, boolean reservedRoom) {
        if (failure == null) {
            e.state = State.RESIDENT;
            lru.add(e);
            loads++;
        } else {
            e.state = State.ABSENT;
            if (reservedRoom) {
                reserved -= e.reservedBytes;
                inModel.remove(e.name);
            }
            if (!retry) {
                loadFailures++;
            }
            if (failure instanceof SizeChanged) {
                e.size = -1;
            }
        }
        e.attempt.done = true;
        e.attempt.failure = failure;
        e.attempt.retry = retry;
        List<StoreEntry> victims = new ArrayList<>();
        settle(e, victims);
        changed.signalAll();
        evict(victims);
    }

    /** Waits for the name to be free in the model and for room, evicting as needed; then reserves {@code e.size}. */
    private void reserveRoom(StoreEntry e) {
        lock.lock();
        try {
            while (true) {
                StoreEntry holder = inModel.get(e.name);
                if (holder == null) {
                    if (reserved + e.size <= budget) {
                        reserved += e.size;
                        e.reservedBytes = e.size;
                        inModel.put(e.name, e);
                        return;
                    }
                    List<StoreEntry> victims = chooseVictims(reserved + e.size - budget - evicting);
                    if (!victims.isEmpty()) {
                        evict(victims);
                        continue;
                    }
                } else if (holders.containsKey(Thread.currentThread())) {
                    throw new WaitRefused("adapter '" + e.name + "' was registered again while an open "
                            + "batch still uses the old registration, and this thread holds an open batch: waiting "
                            + "for the old one to leave could wait for this thread itself; close the open batch "
                            + "first");
                }
                await(holder == null ? "waiting for room to load adapter '" + e.name + "'"
                        : "waiting for the old registration of adapter '" + e.name + "' to leave the model");
            }
        } finally {
            lock.unlock();
        }
    }

    /** Under the lock: the least recently used unpinned residents worth {@code bytes} (as many as there are). */
    private List<StoreEntry> chooseVictims(long bytes) {
        List<StoreEntry> victims = new ArrayList<>();
        long freed = 0;
        for (Iterator<StoreEntry> it = lru.iterator(); it.hasNext() && freed < bytes; ) {
            StoreEntry v = it.next();
            if (v.pins == 0) {
                victims.add(v);
                freed += v.reservedBytes;
            }
        }
        victims.forEach(this::markEvicting);
        return victims;
    }

    private void markEvicting(StoreEntry v) {
        v.state = State.EVICTING;
        lru.remove(v);
        evicting += v.reservedBytes;
    }

    /**
     * Called under the lock: deletes the marked {@code victims} from the model with the lock released (a delete waits
     * for the forwards running on each module), then records them absent and frees their bytes. A victim the model no
     * longer holds (deleted behind the store's back) is only forgotten, and one some modules lost is deleted from the
     * others; a victim the model refuses to delete (merged behind the store's back) is kept resident and the refusal
     * is thrown.
     */
    private void evict(List<StoreEntry> victims) {
        if (victims.isEmpty()) {
            return;
        }
        assert lock.getHoldCount() == 1 : "evict must release the lock while it deletes";
        RuntimeException refused = null;
        List<StoreEntry> kept = new ArrayList<>();
        List<StoreEntry> lost = new ArrayList<>();
        lock.unlock();
        try {
            for (StoreEntry v : victims) {
                try {
                    List<LoraLinear> holding = modulesHolding(v.name);
                    if (holding.size() == model.loraModules().size()) {
                        model.deleteAdapter(v.name);
                    } else {
                        // Deleted behind the store's back, from every module or some: nothing (else) to delete.
                        lost.add(v);
                        for (LoraLinear m : holding) {
                            m.deleteAdapter(v.name);
                        }
                    }
                } catch (RuntimeException ex) {
                    kept.add(v);
                    IllegalStateException wrapped = new IllegalStateException("evicting adapter '" + v.name
                            + "': the model refused to delete it (was it changed behind the store's back?): "
                            + ex.getMessage(), ex);
                    if (refused == null) {
                        refused = wrapped;
                    } else {
                        refused.addSuppressed(wrapped);
                    }
                }
            }
        } finally {
            lock.lock();
            for (StoreEntry v : victims) {
                evicting -= v.reservedBytes;
                if (kept.contains(v)) {
                    v.state = State.RESIDENT;
                    lru.add(v);
                } else {
                    v.state = State.ABSENT;
                    reserved -= v.reservedBytes;
                    inModel.remove(v.name);
                    if (!lost.contains(v)) {
                        evictions++;
                    }
                }
            }
            changed.signalAll();
        }
        if (refused != null) {
            throw refused;
        }
    }

    /** The model's LoRA modules that hold an adapter named {@code name}. */
    private List<LoraLinear> modulesHolding(String name) {
        List<LoraLinear> out = new ArrayList<>();
        for (LoraLinear m : model.loraModules().values()) {
            if (m.adapterNames().contains(name)) {
                out.add(m);
            }
        }
        return out;
    }

    /**
     * A batch's forward through {@code module} failed: if some of its adapters are missing from that module (deleted
     * from the model behind the store's back), the store forgets them (what the other modules still hold of them is
     * deleted, their bytes are freed; the next batch that names them loads them again) and an
     * {@link IllegalStateException} naming them replaces {@code failure}; else {@code failure} is rethrown.
     */
    private RuntimeException lostAdapters(Batch batch, String module, RuntimeException failure) {
        LoraLinear layer = model.loraModules().get(module);
        if (layer == null) {
            return failure;
        }
        List<String> held = layer.adapterNames();
        List<String> missing = new ArrayList<>();
        List<StoreEntry> victims = new ArrayList<>();
        lock.lock();
        try {
            for (StoreEntry e : batch.entries) {
                if (!held.contains(e.name)) {
                    missing.add(e.name);
                    if (e.state == State.RESIDENT && inModel.get(e.name) == e) {
                        markEvicting(e);
                        victims.add(e);
                    }
                }
            }
            if (missing.isEmpty()) {
                return failure;
            }
            IllegalStateException lost = new IllegalStateException("adapter(s) " + missing + " of this batch are no "
                    + "longer in module '" + module + "': deleted from the model behind the store's back. The store "
                    + "has forgotten them and freed their bytes; the next batch that names them loads them again from "
                    + "their directories. To stop serving an adapter, call AdapterStore.unregister(name), not the "
                    + "model's deleteAdapter", failure);
            try {
                evict(victims);
            } catch (RuntimeException ex) {
                lost.addSuppressed(ex);
            }
            return lost;
        } finally {
            lock.unlock();
        }
    }

    // ---------------------------------------------------------------- helpers

    private void await(String what) {
        try {
            changed.await();
        } catch (InterruptedException ex) {
            Thread.currentThread().interrupt();
            throw new WaitRefused("interrupted while " + what, ex);
        }
    }

    /**
     * The calling thread's wait was refused (it holds an open batch and could wait for itself) or interrupted (its
     * interrupt flag is set again): not the adapter's fault, so batches waiting for the same load try again.
     */
    static final class WaitRefused extends IllegalStateException {
        private static final long serialVersionUID = 1L;

        WaitRefused(String message) {
            super(message);
        }

        WaitRefused(String message, InterruptedException cause) {
            super(message, cause);
        }
    }

    private void requireOpen() {
        if (closed) {
            throw new IllegalStateException("the adapter store is closed");
        }
    }

    private IllegalArgumentException notRegistered(String name) {
        return new IllegalArgumentException("adapter '" + name + "' is not registered (" + registry.size()
                + " adapters are); register(name, dir) first");
    }

    private static AdapterStoreException failed(String[] rows, Map<String, Exception> failures, int distinct) {
        List<Integer> failedRows = new ArrayList<>();
        Map<String, Exception> inRowOrder = new LinkedHashMap<>();
        for (int i = 0; i < rows.length; i++) {
            if (rows[i] != null && failures.containsKey(rows[i])) {
                failedRows.add(i);
                inRowOrder.put(rows[i], failures.get(rows[i]));
            }
        }
        return new AdapterStoreException(inRowOrder, failedRows.stream().mapToInt(Integer::intValue).toArray(),
                distinct);
    }

    @Override
    public String toString() {
        Stats s = stats();
        return String.format(Locale.ROOT, "AdapterStore{%d registered, %d resident, %,d of %,d bytes, hit rate %.3f}",
                s.registered(), s.residentAdapters(), s.residentBytes(), s.budgetBytes(), s.hitRate());
    }

    // ---------------------------------------------------------------- types

    /**
     * An open batch: its adapters stay resident until {@link #close()}. Use it from any thread; close it once
     * (closing again does nothing).
     */
    public final class Batch implements AutoCloseable {
        private final String[] rows;
        final List<StoreEntry> entries;
        final Thread owner = Thread.currentThread();
        private final AtomicBoolean closedFlag = new AtomicBoolean();

        private Batch(String[] rows, List<StoreEntry> entries) {
            this.rows = rows;
            this.entries = entries;
        }

        /**
         * The batch through linear module {@code module}: {@link LoraModel#forward(String, INDArray, String[])} with
         * this batch's rows.
         *
         * @param module a linear module of the model
         * @param x      {@code [n, in]} (or {@code [..., in]}) with one row per name of the batch; not changed
         * @return a new array {@code [n, out]}
         * @throws IllegalStateException    once the batch is closed; when some of the batch's adapters were deleted
         *                                  from the model behind the store's back (the message names them; the store
         *                                  forgets them, and the next batch that names them loads them again); or as
         *                                  the model's forward
         * @throws IllegalArgumentException as the model's forward (wrong row count, unknown module, bad input)
         */
        public INDArray forward(String module, INDArray x) {
            if (closedFlag.get()) {
                throw new IllegalStateException("the batch is closed; its adapters may have left the model");
            }
            try {
                return model.forward(module, x, rows);
            } catch (IllegalArgumentException ex) {
                throw lostAdapters(this, module, ex);
            }
        }

        /** {@return the name per row, as given (null or {@value LoraLinear#BASE_MODEL}: base); a copy} */
        public String[] adapterPerRow() {
            return rows.clone();
        }

        /** {@return the distinct adapters the batch pins, in the order its rows first name them} */
        public List<String> adapters() {
            List<String> out = new ArrayList<>(entries.size());
            entries.forEach(e -> out.add(e.name));
            return Collections.unmodifiableList(out);
        }

        /** Unpins the batch's adapters; closing again does nothing. */
        @Override
        public void close() {
            if (closedFlag.compareAndSet(false, true)) {
                release(entries, owner);
            }
        }
    }

    /**
     * What the store did since it was made, and where it stands.
     *
     * @param batches          batches admitted
     * @param hits             adapters (counted once per batch) resident when the batch was admitted
     * @param misses           adapters (once per batch) not resident then: loaded by this batch or another
     * @param rowHits          rows whose adapter was a hit
     * @param rowMisses        rows whose adapter was a miss
     * @param loads            adapters loaded into the model
     * @param loadFailures     loads that failed (a corrupt file, a file changed on disk, ...)
     * @param evictions        adapters removed from the model (for room, unregistered, or the store closed)
     * @param residentAdapters adapters resident now
     * @param residentBytes    bytes resident, loading or being evicted now
     * @param budgetBytes      the budget
     * @param registered       adapters registered now
     */
    public record Stats(long batches, long hits, long misses, long rowHits, long rowMisses, long loads,
                        long loadFailures, long evictions, int residentAdapters, long residentBytes, long budgetBytes,
                        int registered) {

        /** {@return hits / (hits + misses), per adapter and batch; NaN before the first batch} */
        public double hitRate() {
            return (double) hits / (hits + misses);
        }

        /** {@return rowHits / (rowHits + rowMisses): the share of requests (rows) served without a load; NaN first} */
        public double rowHitRate() {
            return (double) rowHits / (rowHits + rowMisses);
        }
    }
}
