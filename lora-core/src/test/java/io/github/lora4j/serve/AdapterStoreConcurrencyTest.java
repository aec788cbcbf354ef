package io.github.lora4j.serve;

import static io.github.lora4j.TestData.gaussian;
import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertInstanceOf;
import static org.junit.jupiter.api.Assertions.assertSame;
import static org.junit.jupiter.api.Assertions.assertTrue;

import io.github.lora4j.io.AdapterFormatException;
import io.github.lora4j.model.LoraModel;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.List;
import java.util.Set;
import java.util.SplittableRandom;
import java.util.TreeSet;
import java.util.concurrent.ConcurrentLinkedQueue;
import java.util.concurrent.CountDownLatch;
import java.util.concurrent.ExecutorService;
import java.util.concurrent.Executors;
import java.util.concurrent.Future;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.atomic.AtomicBoolean;
import java.util.concurrent.atomic.AtomicLong;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.Timeout;
import org.junit.jupiter.api.io.TempDir;
import org.nd4j.linalg.api.buffer.DataType;
import org.nd4j.linalg.api.ndarray.INDArray;

/**
 * Many threads, random batches, a budget far below the adapters' total, a corrupt and a missing adapter among them:
 * every batch that names neither gives bit for bit the output a reference model (every adapter loaded directly, one
 * thread) gives it; every batch that names one fails with exactly those adapters; the resident bytes never exceed the
 * budget. And each adapter loads once when many batches ask for it at the same moment, sharing the outcome.
 */
class AdapterStoreConcurrencyTest {

    /**
     * l0 [48, 32], l1 [16, 48] with adapters of rank 5 to 8, so every batch of two or more groups takes the grouped
     * path: today's stacked path (small total rank) sums the adapters in the order they were added to the layer, so
     * its bits depend on the load order, which concurrent batches make random; the grouped path's do not.
     */
    private static final StoreFixture F = new StoreFixture(32, 48, 16);
    private static final int ADAPTERS = 40;

    @TempDir
    Path tmp;

    private record Planned(String[] rows, INDArray x, INDArray expected, Set<String> failing) {
    }

    @Test
    @Timeout(value = 5, unit = TimeUnit.MINUTES)
    void concurrentBatchesGiveTheSingleThreadedOutputsAndOnlyBrokenAdaptersFail() throws Exception {
        LoraModel ref = F.model();
        List<String> names = new ArrayList<>();
        for (int i = 0; i < ADAPTERS; i++) {
            String n = "t" + i;
            Path dir = tmp.resolve(n);
            F.writeAdapter(dir, 5 + i % 4, 1000L * i);
            ref.load(dir, n);
            names.add(n);
        }
        F.writeNaN(tmp.resolve("bad"), 6, 7);
        F.writeAdapter(tmp.resolve("gone"), 6, 8);
        long budget = 100 * F.bytes(1);                  // the adapters hold 260 rank units: 2.6 x the budget

        int threads = 6;
        int perThread = 50;
        List<List<Planned>> plans = new ArrayList<>();
        SplittableRandom rng = new SplittableRandom(42);
        for (int t = 0; t < threads; t++) {
            List<Planned> plan = new ArrayList<>();
            for (int b = 0; b < perThread; b++) {
                int n = 1 + rng.nextInt(8);
                String[] rows = new String[n];
                Set<String> failing = new TreeSet<>();
                for (int i = 0; i < n; i++) {
                    double u = rng.nextDouble();
                    if (u < 0.08) {
                        rows[i] = null;
                    } else if (u < 0.11) {
                        rows[i] = "bad";
                        failing.add("bad");
                    } else if (u < 0.13) {
                        rows[i] = "gone";
                        failing.add("gone");
                    } else {                             // skewed popularity: low indices are hot
                        rows[i] = names.get((int) (ADAPTERS * Math.pow(rng.nextDouble(), 2)));
                    }
                }
                INDArray x = gaussian(DataType.FLOAT, 100_000L * t + b, 1.0, n, F.in);
                plan.add(new Planned(rows, x, failing.isEmpty() ? StoreFixture.twoLayers(ref, x, rows) : null,
                        failing));
            }
            plans.add(plan);
        }

        try (AdapterStore store = new AdapterStore(F.model(), budget)) {
            names.forEach(n -> store.register(n, tmp.resolve(n)));
            store.register("bad", tmp.resolve("bad"));
            store.register("gone", tmp.resolve("gone"));
            StoreFixture.deleteTree(tmp.resolve("gone"));      // registered, then its files vanish

            AtomicBoolean running = new AtomicBoolean(true);
            AtomicLong maxResident = new AtomicLong();
            Thread monitor = new Thread(() -> {
                while (running.get()) {
                    maxResident.accumulateAndGet(store.residentBytes(), Math::max);
                }
            });
            monitor.start();
            ConcurrentLinkedQueue<String> problems = new ConcurrentLinkedQueue<>();
            CountDownLatch start = new CountDownLatch(1);
            ExecutorService pool = Executors.newFixedThreadPool(threads);
            List<Future<int[]>> done = new ArrayList<>();
            for (List<Planned> plan : plans) {
                done.add(pool.submit(() -> {
                    start.await();
                    int served = 0;
                    int failed = 0;
                    for (Planned p : plan) {
                        try (AdapterStore.Batch batch = store.batch(p.rows())) {
                            INDArray y = StoreFixture.twoLayers(batch, p.x());
                            if (!p.failing().isEmpty()) {
                                problems.add(Arrays.toString(p.rows()) + " was served but names " + p.failing());
                            } else if (!StoreFixture.sameOutput(p.expected(), y)) {
                                problems.add(Arrays.toString(p.rows()) + ": output differs from the reference");
                            }
                            served++;
                        } catch (AdapterStoreException e) {
                            failed++;
                            if (!e.failures().keySet().equals(p.failing())) {
                                problems.add(Arrays.toString(p.rows()) + " failed " + e.failures().keySet()
                                        + ", expected " + p.failing() + ": " + e.getMessage());
                            }
                        }
                    }
                    return new int[] {served, failed};
                }));
            }
            start.countDown();
            int served = 0;
            int failed = 0;
            for (Future<int[]> f : done) {
                int[] r = f.get(4, TimeUnit.MINUTES);
                served += r[0];
                failed += r[1];
            }
            pool.shutdown();
            running.set(false);
            monitor.join();

            assertEquals(List.of(), List.copyOf(problems));
            long expectedFailed = plans.stream().flatMap(List::stream).filter(p -> !p.failing().isEmpty()).count();
            assertEquals(expectedFailed, failed);
            assertEquals(threads * perThread - expectedFailed, served);
            assertTrue(maxResident.get() <= budget, "resident " + maxResident.get() + " > budget " + budget);
            AdapterStore.Stats s = store.stats();
            assertTrue(s.evictions() > 0 && s.hits() > 0 && s.loads() > ADAPTERS,
                    "the stream must both hit and evict: " + s);
            Set<String> inModel = new TreeSet<>(store.residentAdapters());
            inModel.add("default");
            assertEquals(inModel, new TreeSet<>(store.model().adapterNames()), "the model holds what the store says");
            assertEquals(store.residentAdapters().stream().mapToLong(n -> store.sizeOf(n).getAsLong()).sum(),
                    store.residentBytes());
        }
    }

    @Test
    @Timeout(value = 2, unit = TimeUnit.MINUTES)
    void manyBatchesAskingForOneAdapterAtOnceLoadItOnceAndShareTheOutcome() throws Exception {
        Path good = tmp.resolve("good");
        F.writeAdapter(good, 2, 1);
        Path bad = tmp.resolve("bad");
        F.writeNaN(bad, 2, 2);
        LoraModel ref = F.model();
        ref.load(good, "good");
        int threads = 8;
        INDArray x = gaussian(DataType.FLOAT, 3, 1.0, 2, F.in);
        try (AdapterStore store = new AdapterStore(F.model(), 1 << 20)) {
            store.register("good", good);
            store.register("bad", bad);
            for (String name : List.of("good", "bad")) {
                long missesBefore = store.stats().misses();
                // The one load waits here until every batch has been admitted and is waiting for it.
                store.beforeLoad = n -> {
                    long deadline = System.nanoTime() + TimeUnit.SECONDS.toNanos(60);
                    while (store.stats().misses() < missesBefore + threads && System.nanoTime() < deadline) {
                        Thread.onSpinWait();
                    }
                };
                ExecutorService pool = Executors.newFixedThreadPool(threads);
                List<Future<Object>> results = new ArrayList<>();
                for (int t = 0; t < threads; t++) {
                    results.add(pool.submit(() -> {
                        try (AdapterStore.Batch b = store.batch(new String[] {name, null})) {
                            return StoreFixture.twoLayers(b, x);
                        } catch (AdapterStoreException e) {
                            return e;
                        }
                    }));
                }
                List<Object> outcomes = new ArrayList<>();
                for (Future<Object> f : results) {
                    outcomes.add(f.get(90, TimeUnit.SECONDS));
                }
                pool.shutdown();
                assertEquals(missesBefore + threads, store.stats().misses(), "every batch met the load");
                if (name.equals("good")) {
                    INDArray expected = StoreFixture.twoLayers(ref, x, new String[] {"good", null});
                    for (Object o : outcomes) {
                        assertTrue(StoreFixture.sameOutput(expected, (INDArray) o), "output of a concurrent batch");
                    }
                    assertEquals(1, store.stats().loads(), "one load for " + threads + " batches");
                } else {
                    Exception first = ((AdapterStoreException) outcomes.get(0)).failures().get("bad");
                    assertInstanceOf(AdapterFormatException.class, first);
                    for (Object o : outcomes) {
                        assertSame(first, ((AdapterStoreException) o).failures().get("bad"),
                                "every batch shares the one failed load");
                    }
                    assertEquals(1, store.stats().loadFailures());
                }
            }
            assertEquals(List.of("good"), store.residentAdapters());
        }
    }

    @Test
    @Timeout(value = 2, unit = TimeUnit.MINUTES)
    void aBatchWaitingForBudgetCanBeInterruptedAndHoldsNothing() throws Exception {
        Path a = tmp.resolve("a");
        F.writeAdapter(a, 2, 1);
        Path b = tmp.resolve("b");
        F.writeAdapter(b, 2, 2);
        try (AdapterStore store = new AdapterStore(F.model(), F.bytes(3))) {
            store.register("a", a);
            store.register("b", b);
            AdapterStore.Batch holding = store.batch(new String[] {"a"});
            List<Throwable> thrown = new ArrayList<>();
            AtomicBoolean flagKept = new AtomicBoolean();
            Thread waiter = new Thread(() -> {
                try (AdapterStore.Batch never = store.batch(new String[] {"b"})) {
                    thrown.add(new AssertionError("admitted although a pins the budget"));
                } catch (Throwable e) {
                    thrown.add(e);
                    flagKept.set(Thread.currentThread().isInterrupted());
                }
            });
            waiter.start();
            while (waiter.getState() != Thread.State.WAITING) {
                Thread.sleep(1);
            }
            waiter.interrupt();
            waiter.join();
            IllegalStateException e = assertInstanceOf(IllegalStateException.class, thrown.get(0));
            assertTrue(e.getMessage().contains("interrupted while waiting for budget"), e.getMessage());
            assertTrue(flagKept.get(), "the interrupt flag is set again");
            assertEquals(List.of("a"), store.residentAdapters());
            holding.close();
            try (AdapterStore.Batch next = store.batch(new String[] {"b"})) {
                assertEquals(List.of("b"), store.residentAdapters(), "a, unpinned, made room");
            }
        }
    }
}
