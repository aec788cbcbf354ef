package io.github.lora4j.serve;

import static io.github.lora4j.TestData.gaussian;
import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertInstanceOf;
import static org.junit.jupiter.api.Assertions.assertTrue;
import static org.junit.jupiter.api.Assertions.fail;

import io.github.lora4j.io.AdapterFormatException;
import io.github.lora4j.model.LoraModel;
import java.io.IOException;
import java.io.UncheckedIOException;
import java.nio.file.Files;
import java.nio.file.NoSuchFileException;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.HashMap;
import java.util.LinkedHashMap;
import java.util.LinkedHashSet;
import java.util.List;
import java.util.Map;
import java.util.OptionalLong;
import java.util.Set;
import java.util.TreeSet;
import java.util.concurrent.ConcurrentLinkedQueue;
import java.util.function.Consumer;
import net.jqwik.api.Arbitraries;
import net.jqwik.api.Arbitrary;
import net.jqwik.api.Combinators;
import net.jqwik.api.ForAll;
import net.jqwik.api.Property;
import net.jqwik.api.Provide;
import net.jqwik.api.Tuple;
import net.jqwik.api.lifecycle.AfterTry;
import net.jqwik.api.state.Action;
import net.jqwik.api.state.ActionChain;
import net.jqwik.api.state.Transformer;
import net.jqwik.api.statistics.Statistics;
import org.nd4j.linalg.api.buffer.DataType;
import org.nd4j.linalg.api.ndarray.INDArray;

/**
 * Model-based state machine over {@link AdapterStore}: random sequences of register, unregister, batches run and
 * closed, batches held open (pins) and closed later, and adapter files rewritten on disk (a new version of another
 * rank, a NaN tensor, a garbage header, shapes that do not fit, the directory deleted), under a budget of five rank-1
 * adapters, run against the real store and a reference model of it in plain Java.
 *
 * <p>Before each batch the reference predicts its outcome: refused whole ({@code IllegalArgumentException} above the
 * budget; {@code IllegalStateException} when this thread holds an open batch and the new one would wait) or the exact
 * set of failed adapters with each cause's type, or success. It tracks which adapters are sized, the resident ones in
 * least-recently-used order (a hit moves to the end at admission, a load appends, room is made by evicting the oldest
 * unpinned), pins, unregistered adapters still pinned, loads and evictions. After every call the store must agree on
 * all of it, the model must hold exactly {@code default} plus the resident adapters, the resident bytes must equal
 * the reference's and stay within the budget, and every served batch's two-layer output must equal bit for bit that
 * of a reference {@link LoraModel} holding every version ever written, loaded directly.
 */
class AdapterStoreStateMachineTest {

    private static final StoreFixture F = new StoreFixture(8, 10, 6);
    private static final List<String> NAMES = List.of("a", "b", "c", "d");
    private static final long BUDGET = 5 * F.bytes(1);
    private static final ConcurrentLinkedQueue<Path> DIRS = new ConcurrentLinkedQueue<>();

    @Property(tries = 60)
    void randomCallSequencesMatchTheReferenceModel(@ForAll("chains") ActionChain<Harness> chain) {
        chain.run().closeAll();
    }

    @AfterTry
    void deleteDirectories() {
        for (Path p; (p = DIRS.poll()) != null; ) {
            StoreFixture.deleteTree(p);
        }
    }

    @Provide
    Arbitrary<ActionChain<Harness>> chains() {
        Arbitrary<String> name = Arbitraries.of(NAMES);
        Arbitrary<String> rowName = Arbitraries.frequencyOf(Tuple.of(12, name), Tuple.of(2, Arbitraries.just(null)),
                Tuple.of(1, Arbitraries.just("ghost")));
        Arbitrary<String[]> rows = rowName.array(String[].class).ofMinSize(1).ofMaxSize(5);
        Arbitrary<Integer> rank = Arbitraries.frequencyOf(Tuple.of(5, Arbitraries.of(1, 2, 3)),
                Tuple.of(1, Arbitraries.just(6)));
        Arbitrary<Kind> kind = Arbitraries.frequencyOf(Tuple.of(4, Arbitraries.just(Kind.GOOD)),
                Tuple.of(1, Arbitraries.of(Kind.NAN, Kind.GARBAGE, Kind.MISFIT, Kind.MISSING)));
        return ActionChain.startWith(Harness::new)
                .withAction(2, action(name.map(n -> call("register(" + n + ")", h -> h.register(n)))))
                .withAction(1, action(name.map(n -> call("unregister(" + n + ")", h -> h.unregister(n)))))
                .withAction(6, action(rows.map(r -> call("batch" + Arrays.toString(r), h -> h.batch(r, false)))))
                .withAction(2, action(rows.map(r -> call("hold" + Arrays.toString(r), h -> h.batch(r, true)))))
                .withAction(2, action(Arbitraries.just(call("close oldest held batch", Harness::release))))
                .withAction(3, action(Combinators.combine(name, kind, rank)
                        .as((n, k, r) -> call("write(" + n + ", " + k + ", r=" + r + ")", h -> h.write(n, k, r)))))
                .withMaxTransformations(40);
    }

    private static Action.Independent<Harness> action(Arbitrary<Transformer<Harness>> calls) {
        return () -> calls;
    }

    private static Transformer<Harness> call(String description, Consumer<Harness> call) {
        return Transformer.mutate(description, call);
    }

    /** What an adapter directory holds. */
    enum Kind {
        GOOD, NAN, GARBAGE, MISFIT, MISSING
    }

    /** One adapter directory as the reference knows it. */
    private static final class Disk {
        Kind kind = Kind.MISSING;
        int rank;
        int version;
    }

    /** One registration as the reference knows it. */
    private static final class Reg {
        final String name;
        boolean sized;
        long size;
        int pins;
        long pinnedBytes;
        boolean resident;
        boolean retired;
        int version;

        Reg(String name) {
            this.name = name;
        }
    }

    /** An open batch the harness holds. */
    private record Held(AdapterStore.Batch batch, String[] rows, String[] refRows, List<Reg> regs, INDArray x) {
    }

    static final class Harness {
        final Path root;
        final AdapterStore store = new AdapterStore(F.model(), BUDGET);
        final LoraModel ref = F.model();
        final Map<String, Disk> disk = new HashMap<>();
        final Map<String, Reg> registered = new HashMap<>();
        /** Resident registrations, least recently used first. */
        final List<Reg> lru = new ArrayList<>();
        final List<Held> held = new ArrayList<>();
        int versions;
        long loads;
        long evictions;
        long seed = 1;

        Harness() {
            try {
                root = Files.createTempDirectory("lora4j-store-sm");
            } catch (IOException e) {
                throw new UncheckedIOException(e);
            }
            DIRS.add(root);
            for (String n : NAMES) {
                write(n, Kind.GOOD, 1 + n.charAt(0) % 3);
                register(n);
            }
        }

        Path dir(String name) {
            return root.resolve(name);
        }

        // ------------------------------------------------------------ actions

        void register(String name) {
            boolean refuse = registered.containsKey(name) || disk.get(name).kind == Kind.MISSING;
            expect(refuse ? IllegalArgumentException.class : null, () -> store.register(name, dir(name)));
            if (!refuse) {
                registered.put(name, new Reg(name));
            }
            check();
        }

        void unregister(String name) {
            Reg r = registered.get(name);
            expect(r == null ? IllegalArgumentException.class : null, () -> store.unregister(name));
            if (r != null) {
                registered.remove(name);
                r.retired = true;
                if (r.pins == 0 && r.resident) {
                    evict(r);
                }
            }
            check();
        }

        void write(String name, Kind kind, int rank) {
            Disk d = disk.computeIfAbsent(name, k -> new Disk());
            Path dir = dir(name);
            StoreFixture.deleteTree(dir);
            long s = seed;
            seed += 100;
            switch (kind) {
                case GOOD -> {
                    F.writeAdapter(dir, rank, s);
                    d.version = ++versions;
                    try {
                        ref.load(dir, name + "#" + d.version);
                    } catch (IOException e) {
                        throw new UncheckedIOException(e);
                    }
                }
                case NAN -> F.writeNaN(dir, rank, s);
                case GARBAGE -> F.writeGarbage(dir, rank, s);
                case MISFIT -> F.writeMisfit(dir, rank, s);
                case MISSING -> {
                }
                default -> throw new AssertionError(kind);
            }
            d.kind = kind;
            d.rank = rank;
            check();
        }

        /** Opens a batch; closes it at once unless {@code hold} (then at most two are held). */
        void batch(String[] rows, boolean hold) {
            if (hold && held.size() >= 2) {
                return;
            }
            INDArray x = gaussian(DataType.FLOAT, seed++, 1.0, rows.length, F.in);
            LinkedHashSet<String> distinct = new LinkedHashSet<>();
            for (String n : rows) {
                if (n != null) {
                    distinct.add(n);
                }
            }
            // Every adapter is tried: unknown names, sizing (headers only) and the budget refuse adapters one by one.
            Map<String, Class<? extends Exception>> failures = new LinkedHashMap<>();
            List<Reg> regs = new ArrayList<>();
            for (String n : distinct) {
                if (registered.containsKey(n)) {
                    regs.add(registered.get(n));
                } else {
                    failures.put(n, IllegalArgumentException.class);
                }
            }
            for (Reg r : regs) {
                if (!r.sized) {
                    Disk d = disk.get(r.name);
                    switch (d.kind) {
                        case GOOD, NAN -> {
                            r.sized = true;
                            r.size = F.bytes(d.rank);
                        }
                        case GARBAGE -> failures.put(r.name, AdapterFormatException.class);
                        case MISFIT -> failures.put(r.name, IllegalArgumentException.class);
                        case MISSING -> failures.put(r.name, NoSuchFileException.class);
                        default -> throw new AssertionError(d.kind);
                    }
                }
            }
            regs.removeIf(r -> failures.containsKey(r.name));
            long need = 0;
            for (Reg r : regs) {
                if (r.size > BUDGET) {
                    failures.put(r.name, IllegalArgumentException.class);
                } else {
                    need += r.size;
                }
            }
            regs.removeIf(r -> failures.containsKey(r.name));
            if (need > BUDGET) {
                expectRefusal(rows, IllegalArgumentException.class, "more than the budget");
                check();
                return;
            }
            long extra = 0;
            for (Reg r : regs) {
                extra += r.pins == 0 ? r.size : 0;
            }
            if (!held.isEmpty() && committed() + extra > BUDGET) {
                expectRefusal(rows, IllegalStateException.class, "close the open batch first");
                check();
                return;
            }
            // Admitted: pin, touch the hits, then load the misses in order.
            List<Reg> claims = new ArrayList<>();
            for (Reg r : regs) {
                if (r.pins++ == 0) {
                    r.pinnedBytes = r.size;
                }
                if (r.resident) {
                    lru.remove(r);
                    lru.add(r);
                } else {
                    claims.add(r);
                }
            }
            boolean waitRefused = false;
            for (Reg r : claims) {
                boolean oldHolds = lru.stream().anyMatch(o -> o != r && o.name.equals(r.name));
                if (oldHolds) {                          // held batches pin it: this thread would wait for itself
                    waitRefused = true;
                    continue;
                }
                while (residentBytes() + r.size > BUDGET) {
                    Reg victim = lru.stream().filter(o -> o.pins == 0).findFirst()
                            .orElseThrow(() -> new AssertionError("no room although admitted"));
                    evict(victim);
                }
                Disk d = disk.get(r.name);
                switch (d.kind) {
                    case MISSING -> failures.put(r.name, NoSuchFileException.class);
                    case GARBAGE -> failures.put(r.name, AdapterFormatException.class);
                    case MISFIT -> failures.put(r.name, IllegalArgumentException.class);
                    case GOOD, NAN -> {
                        if (F.bytes(d.rank) != r.size) {
                            failures.put(r.name, IllegalStateException.class);
                            r.sized = false;
                        } else if (d.kind == Kind.NAN) {
                            failures.put(r.name, AdapterFormatException.class);
                        } else {
                            r.resident = true;
                            r.version = d.version;
                            lru.add(r);
                            loads++;
                        }
                    }
                    default -> throw new AssertionError(d.kind);
                }
            }
            if (waitRefused || !failures.isEmpty()) {
                if (waitRefused) {
                    expectRefusal(rows, IllegalStateException.class, "close the open batch first");
                } else {
                    expectFailures(rows, failures);
                }
                unpin(regs);
                check();
                return;
            }
            AdapterStore.Batch batch;
            try {
                batch = store.batch(rows);
            } catch (AdapterStoreException | RuntimeException e) {
                throw new AssertionError("expected batch " + Arrays.toString(rows) + " to be served", e);
            }
            String[] refRows = new String[rows.length];
            for (int i = 0; i < rows.length; i++) {
                refRows[i] = rows[i] == null ? null : rows[i] + "#" + registered.get(rows[i]).version;
            }
            Held h = new Held(batch, rows, refRows, regs, x);
            Statistics.label("outcome").collect(claims.isEmpty() ? "served, all hits" : "served with loads");
            compare(h);
            if (hold) {
                held.add(h);
            } else {
                batch.close();
                unpin(regs);
            }
            check();
        }

        void release() {
            if (held.isEmpty()) {
                return;
            }
            Held h = held.remove(0);
            compare(h);                                  // still served: nothing it pins was evicted
            h.batch().close();
            unpin(h.regs());
            check();
        }

        void closeAll() {
            while (!held.isEmpty()) {
                release();
            }
            store.close();
            assertEquals(Set.of("default"), Set.copyOf(store.model().adapterNames()));
        }

        // ------------------------------------------------------------ the reference

        private void unpin(List<Reg> regs) {
            for (Reg r : regs) {
                if (--r.pins == 0 && r.retired && r.resident) {
                    evict(r);
                }
            }
        }

        private void evict(Reg r) {
            Statistics.label("outcome").collect(r.retired ? "evicted: unregistered" : "evicted: for room");
            r.resident = false;
            lru.remove(r);
            evictions++;
        }

        private long residentBytes() {
            return lru.stream().mapToLong(r -> r.size).sum();
        }

        private long committed() {
            Set<Reg> pinned = new LinkedHashSet<>();
            registered.values().stream().filter(r -> r.pins > 0).forEach(pinned::add);
            held.forEach(h -> h.regs().stream().filter(r -> r.pins > 0).forEach(pinned::add));
            return pinned.stream().mapToLong(r -> r.pinnedBytes).sum();
        }

        // ------------------------------------------------------------ checks

        private void compare(Held h) {
            INDArray expected = StoreFixture.twoLayers(ref, h.x(), h.refRows());
            assertTrue(StoreFixture.sameOutput(expected, StoreFixture.twoLayers(h.batch(), h.x())),
                    "batch " + Arrays.toString(h.rows()) + " as " + Arrays.toString(h.refRows()));
        }

        private void expectFailures(String[] rows, Map<String, Class<? extends Exception>> failures) {
            failures.values().forEach(t -> Statistics.label("outcome").collect("failed: " + t.getSimpleName()));
            try (AdapterStore.Batch b = store.batch(rows)) {
                fail("expected " + failures + " to fail batch " + Arrays.toString(rows) + ", got " + b.adapters());
            } catch (AdapterStoreException e) {
                assertEquals(failures.keySet(), e.failures().keySet(), e.getMessage());
                failures.forEach((n, type) -> assertInstanceOf(type, e.failures().get(n), e.getMessage()));
                List<Integer> failedRows = new ArrayList<>();
                for (int i = 0; i < rows.length; i++) {
                    if (rows[i] != null && failures.containsKey(rows[i])) {
                        failedRows.add(i);
                    }
                }
                assertArrayEquals(failedRows.stream().mapToInt(Integer::intValue).toArray(), e.failedRows());
            }
            check();
        }

        private void expectRefusal(String[] rows, Class<? extends RuntimeException> type, String text) {
            Statistics.label("outcome").collect("refused: " + text);
            try (AdapterStore.Batch b = store.batch(rows)) {
                fail("expected " + type.getSimpleName() + " for batch " + Arrays.toString(rows) + ", got "
                        + b.adapters());
            } catch (AdapterStoreException e) {
                throw new AssertionError("expected " + type.getSimpleName() + ", got " + e, e);
            } catch (RuntimeException e) {
                assertInstanceOf(type, e);
                assertTrue(e.getMessage().contains(text), e.getMessage());
            }
        }

        private static void expect(Class<? extends RuntimeException> refusal, Runnable call) {
            if (refusal == null) {
                call.run();
                return;
            }
            try {
                call.run();
                fail("expected " + refusal.getSimpleName());
            } catch (RuntimeException e) {
                assertInstanceOf(refusal, e);
            }
        }

        private void check() {
            List<String> expected = new ArrayList<>();
            lru.forEach(r -> expected.add(r.name));
            assertEquals(expected, store.residentAdapters(), "resident adapters, least recently used first");
            assertEquals(residentBytes(), store.residentBytes());
            assertTrue(store.residentBytes() <= BUDGET, "resident " + store.residentBytes() + " > " + BUDGET);
            Set<String> inModel = new TreeSet<>(expected);
            inModel.add("default");
            assertEquals(inModel, new TreeSet<>(store.model().adapterNames()), "adapters in the model");
            for (String n : NAMES) {
                Reg r = registered.get(n);
                assertEquals(r != null, store.isRegistered(n));
                if (r != null) {
                    assertEquals(r.sized ? OptionalLong.of(r.size) : OptionalLong.empty(), store.sizeOf(n), n);
                }
            }
            AdapterStore.Stats s = store.stats();
            assertEquals(loads, s.loads(), "loads");
            assertEquals(evictions, s.evictions(), "evictions");
            assertEquals(registered.size(), s.registered());
        }
    }
}
