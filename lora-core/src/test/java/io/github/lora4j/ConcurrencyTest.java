package io.github.lora4j;

import static io.github.lora4j.TestData.gaussian;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.util.ArrayList;
import java.util.List;
import java.util.concurrent.CountDownLatch;
import java.util.concurrent.ExecutorService;
import java.util.concurrent.Executors;
import java.util.concurrent.Future;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.atomic.AtomicBoolean;
import org.junit.jupiter.api.Test;
import org.nd4j.linalg.api.buffer.DataType;
import org.nd4j.linalg.api.ndarray.INDArray;

/**
 * Readers calling {@code forward} while another thread swaps adapters, merges and unmerges must only ever see one
 * of the consistent outputs: a half-merged W or a mix of two adapters matches none of them. Bounded in work, not
 * in time: a fixed number of writer operations, readers stop when the writer is done.
 */
class ConcurrencyTest {

    @Test
    void forwardDuringSwapsAndMergesSeesOnlyConsistentStates() throws Exception {
        LoraLinear l = TestData.trainedLayer(DataType.DOUBLE, 21, 48, 40, LoraConfig.builder().rank(4).build(), true);
        l.addAdapter("second", LoraConfig.builder().rank(4).alpha(24).build());
        l.setAdapterWeights("second", gaussian(DataType.DOUBLE, 22, 1, 4, 48), gaussian(DataType.DOUBLE, 23, 1, 40, 4));
        INDArray x = gaussian(DataType.DOUBLE, 24, 1, 16, 48);
        INDArray original = l.weight().dup();

        List<INDArray> allowed = new ArrayList<>();
        for (String name : List.of("default", "second")) {
            l.setActiveAdapter(name);
            allowed.add(l.forward(x));
        }
        l.setActiveAdapter("default");
        // the two states differ clearly, so a mixed or half-merged output cannot pass for either
        assertTrue(TestData.normwiseRelativeError(allowed.get(0), allowed.get(1)) > 0.1);

        int readers = 3;
        AtomicBoolean done = new AtomicBoolean();
        CountDownLatch started = new CountDownLatch(readers);
        ExecutorService pool = Executors.newFixedThreadPool(readers);
        List<Future<int[]>> results = new ArrayList<>();
        for (int t = 0; t < readers; t++) {
            results.add(pool.submit(() -> {
                int[] seen = new int[2];
                started.countDown();
                do {
                    INDArray y = l.forward(x);
                    int match = -1;
                    for (int k = 0; k < allowed.size(); k++) {
                        if (TestData.normwiseRelativeError(y, allowed.get(k)) < 1e-12) {
                            match = k;
                        }
                    }
                    if (match < 0) {
                        throw new AssertionError("inconsistent output: matches no adapter state");
                    }
                    seen[match]++;
                } while (!done.get());
                return seen;
            }));
        }
        started.await();
        for (int i = 0; i < 300; i++) {
            l.setActiveAdapter(i % 2 == 0 ? "second" : "default");
            l.merge(i % 3 == 0 ? MergeMode.FAST : MergeMode.EXACT);
            l.unmerge();
        }
        done.set(true);
        int total = 0;
        for (Future<int[]> f : results) {
            int[] seen = f.get(60, TimeUnit.SECONDS);
            total += seen[0] + seen[1];
        }
        pool.shutdown();
        assertTrue(pool.awaitTermination(10, TimeUnit.SECONDS));
        assertTrue(total >= readers, "every reader ran at least once, got " + total);
        assertEquals(false, l.isMerged());
        // fast cycles may have moved W by ulps, but never beyond
        assertTrue(TestData.maxRelativeError(l.weight(), original, 1.0) < 1e-13);
    }
}
