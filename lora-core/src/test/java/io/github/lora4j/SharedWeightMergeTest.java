package io.github.lora4j;

import static io.github.lora4j.TestData.assertBitwiseEquals;
import static io.github.lora4j.TestData.gaussian;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import io.github.lora4j.model.LoraModel;
import java.util.ArrayList;
import java.util.List;
import java.util.concurrent.CyclicBarrier;
import java.util.concurrent.ExecutorService;
import java.util.concurrent.Executors;
import java.util.concurrent.Future;
import java.util.concurrent.TimeUnit;
import net.jqwik.api.ForAll;
import net.jqwik.api.Property;
import net.jqwik.api.constraints.IntRange;
import net.jqwik.api.constraints.Size;
import org.junit.jupiter.api.Test;
import org.nd4j.linalg.api.buffer.DataType;
import org.nd4j.linalg.api.ndarray.INDArray;
import org.nd4j.linalg.indexing.NDArrayIndex;

/**
 * Two loose {@link LoraLinear}s over one {@code W} (issue 29, "Also"): while one has an adapter merged into memory the
 * other's weight shares, the other's merge is refused and {@code W} stays as it was; without the refusal the sequence
 * merge, merge, unmerge, unmerge leaves {@code W} wrong. Model-based: random sequences of merges and unmerges over two
 * wrappers on the same array, on two views of it, on overlapping row blocks and on disjoint row blocks, against a
 * model that knows which wrapper is merged; after every step each wrapper's rows of {@code W} are bitwise either the
 * original or what that wrapper's exact merge writes.
 */
class SharedWeightMergeTest {

    private static final int ROWS = 8;
    private static final int COLS = 6;
    private static final LoraConfig CFG = LoraConfig.builder().rank(2).alpha(3).build();

    /** How the two wrappers see W {@code [8, 6]}: rows {@code [from, to)} each; {@code shared} if they may overlap. */
    enum Sharing {
        SAME_ARRAY(0, 8, 0, 8, true),
        TWO_VIEWS_OF_ALL(0, 8, 0, 8, true),
        OVERLAPPING_ROWS(0, 5, 3, 8, true),
        DISJOINT_ROWS(0, 4, 4, 8, false);

        final int[] from;
        final int[] to;
        final boolean shared;

        Sharing(int from0, int to0, int from1, int to1, boolean shared) {
            this.from = new int[] {from0, from1};
            this.to = new int[] {to0, to1};
            this.shared = shared;
        }
    }

    enum Step { MERGE_0, MERGE_1, UNMERGE_0, UNMERGE_1, MERGE_AND_UNLOAD_0 }

    /** Wrapper {@code i}'s weight: the array itself, or a row-block view of it. */
    private static INDArray weightOf(INDArray w, Sharing s, int i) {
        if (s == Sharing.SAME_ARRAY) {
            return w;
        }
        return w.get(NDArrayIndex.interval(s.from[i], s.to[i]), NDArrayIndex.all());
    }

    private static LoraLinear wrapper(INDArray weight, long seed) {
        LoraLinear l = LoraLinear.wrap(weight, null, CFG);
        l.setAdapterWeights(LoraLinear.DEFAULT_ADAPTER, gaussian(DataType.DOUBLE, seed, 0.7, 2, COLS),
                gaussian(DataType.DOUBLE, seed + 1, 0.7, weight.rows(), 2));
        return l;
    }

    @Property(tries = 60)
    void mergesOverSharedMemoryFollowTheModel(@ForAll Sharing sharing, @ForAll @IntRange(max = 1000) int seed,
                                              @ForAll @Size(min = 1, max = 14) List<Step> steps) {
        INDArray w = gaussian(DataType.DOUBLE, seed, 1.0, ROWS, COLS);
        INDArray original = w.dup();
        LoraLinear[] layers = {wrapper(weightOf(w, sharing, 0), seed + 10L), wrapper(weightOf(w, sharing, 1), seed + 20L)};
        INDArray[] mergedRows = {layers[0].mergedWeight(), layers[1].mergedWeight()};
        boolean[] merged = new boolean[2];
        boolean[] unloaded = new boolean[2];
        for (Step step : steps) {
            int i = step.name().endsWith("_0") ? 0 : 1;
            int other = 1 - i;
            INDArray before = w.dup();
            LoraLinear l = layers[i];
            switch (step) {
                case MERGE_0, MERGE_1 -> {
                    if (merged[i] || unloaded[i]) {
                        assertThrows(IllegalStateException.class, l::merge, step + ": already merged, or no adapter");
                        assertBitwiseEquals(before, w, step + " refused: W");
                    } else if (sharing.shared && merged[other]) {
                        IllegalStateException e = assertThrows(IllegalStateException.class, l::merge,
                                step + " while the other wrapper is merged into shared memory");
                        assertTrue(e.getMessage().contains("shares memory with the W of another layer")
                                && e.getMessage().contains("unmerge that layer first"), e.getMessage());
                        assertBitwiseEquals(before, w, step + " refused: W");
                        assertFalse(l.isMerged(), step + " refused: not merged");
                    } else {
                        l.merge();
                        merged[i] = true;
                    }
                }
                case UNMERGE_0, UNMERGE_1 -> {
                    if (merged[i]) {
                        l.unmerge();
                        merged[i] = false;
                    } else {
                        assertThrows(IllegalStateException.class, l::unmerge, step + ": nothing merged");
                        assertBitwiseEquals(before, w, step + " refused: W");
                    }
                }
                case MERGE_AND_UNLOAD_0 -> {
                    if (!merged[0] && !unloaded[0] && sharing.shared && merged[1]) {
                        assertThrows(IllegalStateException.class, l::mergeAndUnload, step + ": its merge is refused");
                        assertBitwiseEquals(before, w, step + " refused: W");
                    } else {
                        l.mergeAndUnload();
                        // the update stays in W for good: from now on wrapper 0's rows are the original ones plus it
                        if (!unloaded[0]) {
                            original = withRows(original, sharing, 0, mergedRows[0]);
                            if (!merged[1]) {
                                mergedRows[1] = layers[1].mergedWeight();   // its rows may hold that update now
                            }
                        }
                        merged[0] = false;
                        unloaded[0] = true;
                        assertTrue(l.adapterNames().isEmpty(), "unloaded: no adapters");
                    }
                }
            }
            for (int k = 0; k < 2; k++) {
                assertEquals(merged[k], layers[k].isMerged(), "wrapper " + k + " merged after " + step);
            }
            INDArray expected = original;
            for (int k = 0; k < 2; k++) {
                if (merged[k]) {
                    expected = withRows(expected, sharing, k, mergedRows[k]);
                }
            }
            assertBitwiseEquals(expected, w, "W after " + steps + " up to " + step + " (" + sharing + ")");
        }
    }

    /** A copy of {@code w} whose rows of wrapper {@code i} are {@code rows}. */
    private static INDArray withRows(INDArray w, Sharing s, int i, INDArray rows) {
        INDArray out = w.dup();
        weightOf(out, s, i).assign(rows);
        return out;
    }

    @Test
    void mergeMergeUnmergeUnmergeOverOneArrayIsRefusedAtTheSecondMergeAndWEndsBitwiseAsItWas() {
        INDArray w = gaussian(DataType.FLOAT, 3, 1.0, ROWS, COLS);
        long[] original = TestData.bits(w);
        LoraLinear first = LoraLinear.wrap(w, null, CFG);
        LoraLinear second = LoraLinear.wrap(w, null, CFG);
        first.setAdapterWeights("default", gaussian(DataType.FLOAT, 4, 0.5, 2, COLS), gaussian(DataType.FLOAT, 5, 0.5, ROWS, 2));
        second.setAdapterWeights("default", gaussian(DataType.FLOAT, 6, 0.5, 2, COLS), gaussian(DataType.FLOAT, 7, 0.5, ROWS, 2));
        first.merge();
        long[] merged = TestData.bits(w);
        IllegalStateException e = assertThrows(IllegalStateException.class, () -> second.merge(MergeMode.FAST));
        assertTrue(e.getMessage().contains("a LoraLinear [out 8, in 6] with adapter 'default'"), e.getMessage());
        assertEquals(merged.length, TestData.bits(w).length);
        assertTrue(java.util.Arrays.equals(merged, TestData.bits(w)), "a refused merge leaves W as it was");
        assertThrows(IllegalStateException.class, second::unmerge, "the second wrapper has nothing merged");
        first.unmerge();
        assertTrue(java.util.Arrays.equals(original, TestData.bits(w)), "W bitwise the original");
        second.merge();          // free again
        second.unmerge();
        assertTrue(java.util.Arrays.equals(original, TestData.bits(w)), "W bitwise the original");
    }

    @Test
    void aModelsMergeAndUnloadGivesTheMemoryBackToALooseLayer() {
        INDArray w = gaussian(DataType.DOUBLE, 11, 1.0, ROWS, COLS);
        LoraModel model = LoraModel.builder().linear("q", w, null).build();
        model.applyLora(CFG, List.of("q"));
        LoraLinear wrapper = model.module("q");
        model.merge();
        LoraLinear loose = wrapper(w, 12);
        assertThrows(IllegalStateException.class, loose::merge, "the model's module holds W");
        model.mergeAndUnload();
        assertFalse(wrapper.isMerged(), "the dropped wrapper unloaded: it can no longer unmerge out of W");
        assertThrows(IllegalStateException.class, wrapper::unmerge);
        INDArray kept = w.dup();
        loose.merge();                                  // the update of the model stays, the loose layer adds its own
        loose.unmerge();
        assertBitwiseEquals(kept, w, "W after the loose layer's merge and unmerge");
    }

    @Test
    void concurrentMergesOfTwoWrappersOverOneArrayLetExactlyOneThrough() throws Exception {
        INDArray w = gaussian(DataType.FLOAT, 21, 1.0, 64, 48);
        long[] original = TestData.bits(w);
        LoraLinear[] layers = new LoraLinear[2];
        for (int k = 0; k < 2; k++) {
            layers[k] = LoraLinear.wrap(w, null, CFG);
            layers[k].setAdapterWeights("default", gaussian(DataType.FLOAT, 22 + k, 0.5, 2, 48),
                    gaussian(DataType.FLOAT, 24 + k, 0.5, 64, 2));
        }
        ExecutorService pool = Executors.newFixedThreadPool(2);
        try {
            for (int round = 0; round < 50; round++) {
                CyclicBarrier start = new CyclicBarrier(2);
                List<Future<Boolean>> results = new ArrayList<>();
                for (LoraLinear l : layers) {
                    results.add(pool.submit(() -> {
                        start.await();
                        try {
                            l.merge();
                            return true;
                        } catch (IllegalStateException refused) {
                            return false;
                        }
                    }));
                }
                int through = 0;
                for (Future<Boolean> f : results) {
                    through += f.get(30, TimeUnit.SECONDS) ? 1 : 0;
                }
                assertEquals(1, through, "round " + round + ": exactly one merge goes through");
                for (LoraLinear l : layers) {
                    if (l.isMerged()) {
                        l.unmerge();
                    }
                }
                assertTrue(java.util.Arrays.equals(original, TestData.bits(w)), "round " + round + ": W bitwise");
            }
        } finally {
            pool.shutdownNow();
        }
    }
}
