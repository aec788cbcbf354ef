package io.github.lora4j;

import static io.github.lora4j.TestData.assertBitwiseEquals;
import static io.github.lora4j.TestData.gaussian;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import io.github.lora4j.MixedBatch.Strategy;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.List;
import java.util.SplittableRandom;
import net.jqwik.api.Arbitraries;
import net.jqwik.api.Arbitrary;
import net.jqwik.api.ForAll;
import net.jqwik.api.Property;
import net.jqwik.api.Provide;
import net.jqwik.api.constraints.IntRange;
import net.jqwik.api.lifecycle.AfterTry;
import org.junit.jupiter.api.AfterEach;
import org.junit.jupiter.api.Test;
import org.nd4j.linalg.api.buffer.DataType;
import org.nd4j.linalg.api.ndarray.INDArray;
import org.nd4j.linalg.factory.Nd4j;
import org.nd4j.linalg.indexing.NDArrayIndex;
import org.nd4j.linalg.ops.transforms.Transforms;

/**
 * The mixed-adapter batch's three strategies (ROWS, SEGMENTED, STACKED, each forced in turn, and the cost model's own
 * choice) on both kernel routes, FLOAT and DOUBLE, with adapters of ranks 4 to 64 in one batch, base rows and
 * disabled adapters.
 *
 * <p><b>The rounding bound.</b> Row {@code i} of a mixed batch and row {@code i} of {@code forward(x)} with that row's
 * adapter active compute the same sums in other orders (a gemv per row or a gemm per segment or a stacked gemm, where
 * the single forward runs one gemm). Each is within the classic forward error bound of a dot product,
 * {@code |fl(Σ t) − Σ t| ≤ γ_k Σ|t|} with {@code γ_k = k·ε / (1 − k·ε)}, of the exact value, element by element
 * {@code E = γ_{in+r+2}·(|x||W|ᵀ + s·|x||A|ᵀ|B|ᵀ + |b|)} (the {@code in} terms of the base product, the {@code r}
 * of the path's second product, one rounding each for adding the path and the bias). So the two differ by at most
 * {@code 2E}, which every comparison here checks element by element.
 */
class MixedBatchKernelTest {

    static final int IN = 80;
    static final int OUT = 72;
    /** Adapters of the test layer and their ranks: 4 to 64 in one batch. */
    static final String[] ADAPTERS = {"default", "r4", "r8", "r16", "r33", "r64"};
    static final int[] RANKS = {8, 4, 8, 16, 33, 64};

    @AfterEach
    @AfterTry
    void defaults() {
        MixedBatch.forced = null;
        Kernels.forceFallback(false);
    }

    /** A layer with a bias and the adapters above, each with random A and B (so every path adds something). */
    static LoraLinear layer(DataType type, long seed) {
        LoraLinear l = LoraLinear.wrap(gaussian(type, seed, 0.3, OUT, IN), gaussian(type, seed + 1, 0.3, OUT),
                LoraConfig.builder().rank(RANKS[0]).alpha(16).seed(seed).build());
        for (int k = 0; k < ADAPTERS.length; k++) {
            if (k > 0) {
                l.addAdapter(ADAPTERS[k], LoraConfig.builder().rank(RANKS[k]).alpha(2.0 * k + 1).seed(seed + k).build());
            }
            l.setAdapterWeights(ADAPTERS[k], gaussian(type, seed + 10 * k + 2, 0.4, RANKS[k], IN),
                    gaussian(type, seed + 10 * k + 3, 0.4, OUT, RANKS[k]));
        }
        return l;
    }

    /**
     * Names per row: each an adapter, null or the base name; {@code runs} makes runs of equal names (ROWS then takes a
     * gemm per run), else rows alternate at random.
     */
    static String[] names(int n, long seed, boolean runs) {
        SplittableRandom rng = new SplittableRandom(seed);
        String[] pool = Arrays.copyOf(ADAPTERS, ADAPTERS.length + 2);
        pool[ADAPTERS.length + 1] = LoraLinear.BASE_MODEL;
        String[] per = new String[n];
        for (int i = 0; i < n; ) {
            String name = pool[rng.nextInt(pool.length)];
            int len = runs ? 1 + rng.nextInt(5) : 1;
            for (int j = 0; j < len && i < n; j++) {
                per[i++] = name;
            }
        }
        return per;
    }

    static boolean isBase(String name) {
        return name == null || name.equals(LoraLinear.BASE_MODEL);
    }

    /** Row i of {@code forward(x)} with row i's adapter active (or adapters disabled for a base row). */
    static INDArray perRowReference(LoraLinear l, INDArray x, String[] per) {
        INDArray expected = Nd4j.create(x.dataType(), x.rows(), OUT);
        String active = l.activeAdapter();
        for (String name : distinct(per)) {
            INDArray y;
            if (isBase(name)) {
                l.disableAdapters();
                y = l.forward(x);
                l.enableAdapters();
            } else {
                l.setActiveAdapter(name);
                y = l.forward(x);
            }
            for (int i = 0; i < per.length; i++) {
                if (isBase(per[i]) ? isBase(name) : per[i].equals(name)) {
                    expected.putRow(i, y.getRow(i));
                }
            }
        }
        l.setActiveAdapter(active);
        return expected;
    }

    private static List<String> distinct(String[] per) {
        List<String> out = new ArrayList<>();
        for (String s : per) {
            if (!out.contains(s)) {
                out.add(s);
            }
        }
        return out;
    }

    /** The elementwise bound {@code 2E} of the class comment, in double. */
    static INDArray twiceForwardErrorBound(LoraLinear l, INDArray x, String[] per) {
        double eps = x.dataType() == DataType.FLOAT ? Math.ulp(1f) / 2 : Math.ulp(1.0) / 2;
        INDArray ax = Transforms.abs(x.castTo(DataType.DOUBLE));
        INDArray e = ax.mmul(Transforms.abs(l.weight().castTo(DataType.DOUBLE)).transpose());      // |x||W|^T
        e.addiRowVector(Transforms.abs(l.bias().castTo(DataType.DOUBLE)));                       // + |b|
        for (int i = 0; i < per.length; i++) {
            int k = isBase(per[i]) || !l.adaptersEnabled() ? -1 : Arrays.asList(ADAPTERS).indexOf(per[i]);
            int r = k < 0 ? 0 : RANKS[k];
            if (k >= 0) {
                LoraAdapter ad = l.adapter(per[i]);
                INDArray path = ax.getRow(i).reshape(1, IN)
                        .mmul(Transforms.abs(ad.a().castTo(DataType.DOUBLE)).transpose())
                        .mmul(Transforms.abs(ad.b().castTo(DataType.DOUBLE)).transpose());  // |x||A|^T|B|^T
                e.getRow(i).addi(path.reshape(OUT).muli(Math.abs(ad.scaling())));
            }
            int terms = IN + r + 2;
            double gamma = terms * eps / (1 - terms * eps);
            e.getRow(i).muli(2 * gamma);
        }
        return e;
    }

    static void assertWithinBound(INDArray expected, INDArray actual, INDArray bound, String what) {
        INDArray diff = Transforms.abs(actual.castTo(DataType.DOUBLE).sub(expected.castTo(DataType.DOUBLE)));
        INDArray excess = diff.sub(bound);
        double worst = excess.maxNumber().doubleValue();
        if (worst > 0) {
            long at = excess.argMax().getLong(0);
            throw new AssertionError(what + ": element " + at + " (row " + at / OUT + ") differs by "
                    + diff.getDouble(at) + ", more than the rounding bound " + bound.getDouble(at));
        }
    }

    @Provide
    Arbitrary<Strategy> strategies() {
        return Arbitraries.of(Strategy.values()).injectNull(0.25);
    }

    @Property(tries = 120)
    void everyRowEqualsTheForwardOfItsOwnAdapterWithinRounding(
            @ForAll @IntRange(min = 1, max = 40) int n, @ForAll("strategies") Strategy strategy,
            @ForAll boolean fallback, @ForAll boolean doubles, @ForAll boolean runs, @ForAll long seed) {
        DataType type = doubles ? DataType.DOUBLE : DataType.FLOAT;
        LoraLinear l = layer(type, seed);
        INDArray x = gaussian(type, seed + 99, 1.0, n, IN);
        String[] per = names(n, seed + 7, runs);
        Kernels.forceFallback(fallback);
        MixedBatch.forced = strategy;
        INDArray mixed = l.forward(x, per);
        MixedBatch.forced = null;
        assertArrayEquals(new long[] {n, OUT}, mixed.shape());
        assertWithinBound(perRowReference(l, x, per), mixed, twiceForwardErrorBound(l, x, per),
                "strategy " + strategy + ", " + (fallback ? "ND4J fallback" : "direct") + ", " + type + ", rows "
                        + Arrays.toString(per));
    }

    private static void assertArrayEquals(long[] expected, long[] actual) {
        assertEquals(Arrays.toString(expected), Arrays.toString(actual), "output shape");
    }

    /** Law: permuting the rows of a batch (and their names) permutes its output rows, within the rounding bound. */
    @Property(tries = 60)
    void permutingTheRowsPermutesTheOutput(@ForAll @IntRange(min = 2, max = 30) int n,
                                           @ForAll("strategies") Strategy strategy, @ForAll boolean doubles,
                                           @ForAll long seed) {
        DataType type = doubles ? DataType.DOUBLE : DataType.FLOAT;
        LoraLinear l = layer(type, seed);
        INDArray x = gaussian(type, seed + 5, 1.0, n, IN);
        String[] per = names(n, seed + 6, false);
        int[] perm = permutation(n, seed + 8);
        INDArray xp = Nd4j.create(type, n, IN);
        String[] pp = new String[n];
        for (int i = 0; i < n; i++) {
            xp.putRow(i, x.getRow(perm[i]));
            pp[i] = per[perm[i]];
        }
        MixedBatch.forced = strategy;
        INDArray y = l.forward(x, per);
        INDArray yp = l.forward(xp, pp);
        INDArray expected = Nd4j.create(type, n, OUT);
        for (int i = 0; i < n; i++) {
            expected.putRow(i, y.getRow(perm[i]));
        }
        assertWithinBound(expected, yp, twiceForwardErrorBound(l, xp, pp), "permuted batch, strategy " + strategy);
    }

    private static int[] permutation(int n, long seed) {
        SplittableRandom rng = new SplittableRandom(seed);
        int[] p = new int[n];
        for (int i = 0; i < n; i++) {
            p[i] = i;
        }
        for (int i = n - 1; i > 0; i--) {
            int j = rng.nextInt(i + 1);
            int t = p[i];
            p[i] = p[j];
            p[j] = t;
        }
        return p;
    }

    /** Law: a batch whose rows all name one adapter is bitwise {@code forward(x)} with it active, whatever is forced. */
    @Property(tries = 40)
    void aOneAdapterBatchIsBitwiseTheSingleForward(@ForAll @IntRange(min = 1, max = 30) int n,
                                                   @ForAll @IntRange(min = 0, max = 5) int k,
                                                   @ForAll("strategies") Strategy strategy, @ForAll boolean fallback,
                                                   @ForAll boolean doubles, @ForAll long seed) {
        DataType type = doubles ? DataType.DOUBLE : DataType.FLOAT;
        LoraLinear l = layer(type, seed);
        INDArray x = gaussian(type, seed + 3, 1.0, n, IN);
        String[] per = new String[n];
        Arrays.fill(per, ADAPTERS[k]);
        Kernels.forceFallback(fallback);
        MixedBatch.forced = strategy;
        INDArray mixed = l.forward(x, per);
        l.setActiveAdapter(ADAPTERS[k]);
        assertBitwiseEquals(l.forward(x), mixed, "all rows " + ADAPTERS[k]);
    }

    @Property(tries = 20)
    void baseOnlyBatchesAndDisabledAdaptersGiveTheBaseOutputBitwise(@ForAll @IntRange(min = 1, max = 20) int n,
                                                                     @ForAll("strategies") Strategy strategy,
                                                                     @ForAll boolean fallback, @ForAll long seed) {
        LoraLinear l = layer(DataType.FLOAT, seed);
        INDArray x = gaussian(DataType.FLOAT, seed + 4, 1.0, n, IN);
        Kernels.forceFallback(fallback);
        MixedBatch.forced = strategy;
        String[] base = new String[n];
        for (int i = 0; i < n; i += 2) {
            base[i] = LoraLinear.BASE_MODEL;
        }
        INDArray baseOnly = l.forward(x, base);
        l.disableAdapters();
        INDArray plain = l.forward(x);
        assertBitwiseEquals(plain, baseOnly, "null and __base__ rows only");
        assertBitwiseEquals(plain, l.forward(x, names(n, seed, false)), "adapters disabled: every row is base");
    }

    /** A batch the size of the issue's second target, small rank, run once per strategy on the direct route. */
    @Test
    void allStrategiesAgreeOnAWideLayerWithTwoHundredDistinctAdapters() {
        int in = 256;
        int out = 192;
        DataType type = DataType.FLOAT;
        LoraLinear l = LoraLinear.wrap(gaussian(type, 1, 0.1, out, in), null, LoraConfig.builder().rank(8).build());
        int k = 200;
        String[] per = new String[k];
        for (int i = 0; i < k; i++) {
            per[i] = "t" + i;
            l.addAdapter(per[i], LoraConfig.builder().rank(4 + i % 61).alpha(8).seed(i).build());
            l.setAdapterWeights(per[i], gaussian(type, 10 + i, 0.1, 4 + i % 61, in),
                    gaussian(type, 1000 + i, 0.1, out, 4 + i % 61));
        }
        INDArray x = gaussian(type, 2, 1.0, k, in);
        INDArray reference = null;
        for (Strategy s : Strategy.values()) {
            MixedBatch.forced = s;
            INDArray y = l.forward(x, per);
            if (reference == null) {
                reference = y;
            } else {
                double err = TestData.normwiseRelativeError(y, reference);
                assertTrue(err < 1e-5, s + " against ROWS: " + err);
            }
        }
        for (int i = 0; i < k; i += 37) {
            l.setActiveAdapter(per[i]);
            INDArray single = l.forward(x.getRow(i).reshape(1, in));
            double err = TestData.normwiseRelativeError(reference.getRow(i), single.reshape(out));
            assertTrue(err < 1e-5, "row " + i + ": " + err);
        }
    }

    // ---------------------------------------------------------------- the block gemm itself

    /**
     * The block gemm on the direct route against ND4J's gemm (the fallback route) for every pair of transpose flags,
     * at offsets into larger arrays, with shapes whose one-row or one-column products are gemvs cut into pieces below
     * OpenBLAS's threading threshold (a {@code [1, 200]·[200, 120]} gemv is three pieces): each piece must start at its
     * own outputs, columns of a transposed matrix as well as rows of a plain one.
     */
    @Test
    void theBlockGemmEqualsNd4jsGemmForEveryFlagAndShape() {
        long seed = 11;
        for (int thin : new int[] {1, 2, 3}) {
            for (int[] wideAndInner : new int[][] {{120, 200}, {7, 9}, {300, 40}}) {
                for (boolean columnOutput : new boolean[] {false, true}) {
                    for (boolean transA : new boolean[] {false, true}) {
                        for (boolean transB : new boolean[] {false, true}) {
                            for (double beta : new double[] {0.0, 0.5}) {
                                int m = columnOutput ? wideAndInner[0] : thin;
                                int n = columnOutput ? thin : wideAndInner[0];
                                checkBlockGemm(m, n, wideAndInner[1], transA, transB, beta, seed++);
                            }
                        }
                    }
                }
            }
        }
    }

    private static void checkBlockGemm(int m, int n, int k, boolean transA, boolean transB, double beta, long seed) {
        DataType type = DataType.DOUBLE;
        int pad = 3;
        INDArray aArr = gaussian(type, seed, 1.0, pad + (long) m * k);
        INDArray bArr = gaussian(type, seed + 1, 1.0, pad + (long) k * n);
        INDArray cArr = gaussian(type, seed + 2, 1.0, pad + (long) m * n);
        int aRows = transA ? k : m;
        int aCols = transA ? m : k;
        int bRows = transB ? n : k;
        int bCols = transB ? k : n;
        INDArray expected = cArr.dup();
        Kernels.forceFallback(true);
        Kernels.gemm(Kernels.Block.dense(aArr, pad, aRows, aCols), transA, Kernels.Block.dense(bArr, pad, bRows, bCols),
                transB, Kernels.Block.dense(expected, pad, m, n), 1.5, beta);
        Kernels.forceFallback(false);
        INDArray actual = cArr.dup();
        Kernels.gemm(Kernels.Block.dense(aArr, pad, aRows, aCols), transA, Kernels.Block.dense(bArr, pad, bRows, bCols),
                transB, Kernels.Block.dense(actual, pad, m, n), 1.5, beta);
        String what = "c [" + m + ", " + n + "] = 1.5 a" + (transA ? "^T" : "") + " b" + (transB ? "^T" : "")
                + " + " + beta + " c, k = " + k;
        assertBitwiseEquals(cArr.get(NDArrayIndex.interval(0, pad)), actual.get(NDArrayIndex.interval(0, pad)),
                what + ": elements before the block are untouched");
        double err = TestData.normwiseRelativeError(actual, expected);
        assertTrue(err < 1e-13, what + ": normwise relative error " + err + " against ND4J's gemm");
    }

    // ---------------------------------------------------------------- the cost model's choice (no timing)

    /** A plan of {@code n} rows over {@code k} adapters of rank r for a {@code [d, d]} layer: row i → adapter i mod k (or grouped). */
    private static MixedBatch.Plan plan(int d, int r, int n, int k, boolean grouped) {
        AdapterSet set = new AdapterSet();
        for (int a = 0; a < k; a++) {
            set.put("a" + a, LoraConfig.builder().rank(r).build(), Nd4j.zeros(DataType.FLOAT, r, d),
                    Nd4j.zeros(DataType.FLOAT, d, r));
        }
        String[] per = new String[n];
        for (int i = 0; i < n; i++) {
            per[i] = "a" + (grouped ? i * k / n : i % k);
        }
        return MixedBatch.plan(per, n, set, true);
    }

    @Test
    void thePlanCountsRowsRunsAndRanks() {
        MixedBatch.Plan p = plan(64, 8, 12, 3, false);
        assertEquals(3, p.used.length);
        assertEquals(12, p.runs, "alternating rows: one run per row");
        assertEquals(12, p.adaptedRows);
        assertEquals(24, p.totalRank);
        MixedBatch.Plan g = plan(64, 8, 12, 3, true);
        assertEquals(3, g.runs, "grouped rows: one run per adapter");
        assertEquals(4, g.maxRows);
    }

    @Test
    void theCostModelPicksPerRowWorkAtTheIssuesShapes() {
        // Targets of issue 28: every row its own adapter. Stacking would multiply the work by the number of adapters,
        // gathering only adds copies: per-row products on the adapters' own buffers.
        assertEquals(Strategy.ROWS, MixedBatch.choose(plan(1024, 8, 1000, 1000, false), 1024, 1024, 4, true, false));
        assertEquals(Strategy.ROWS, MixedBatch.choose(plan(4096, 8, 256, 256, false), 4096, 4096, 4, true, false));
    }

    @Test
    void theCostModelStacksAFewSmallAdaptersOverInterleavedRowsAndTakesGroupedRowsAsTheyCome() {
        // Two rank-8 adapters over 64 alternating rows of a 4096² layer: the stacked R = 16 costs 3 calls and a
        // sliver of the base product, where per-row work streams 256 KiB of weights and 8 gemv pieces per row.
        assertEquals(Strategy.STACKED, MixedBatch.choose(plan(4096, 8, 64, 2, false), 4096, 4096, 4, true, true));
        // Rows already grouped by adapter: one pair of gemms per adapter on the rows where they lie, nothing to copy
        // (gathering would copy 1,000 rows for nothing; stacking would do 8x the LoRA flops).
        assertEquals(Strategy.ROWS, MixedBatch.choose(plan(1024, 8, 1000, 8, true), 1024, 1024, 4, true, false));
    }

    @Test
    void onTheFallbackRouteEveryCallIsDearSoInterleavedRowsAreNotTakenOneByOne() {
        // 1,000 rows alternating over 8 adapters: ROWS would dispatch about 1,750 ND4J ops, SEGMENTED 20.
        MixedBatch.Plan p = plan(1024, 8, 1000, 8, false);
        Strategy s = MixedBatch.choose(p, 1024, 1024, 4, false, false);
        assertTrue(s != Strategy.ROWS, "chose " + s);
        assertTrue(MixedBatch.cost(Strategy.ROWS, p, 1024, 1024, 4, false, false)
                > 10 * MixedBatch.cost(s, p, 1024, 1024, 4, false, false), "by a wide margin");
    }

    @Test
    void theStackedStrategyIsNeverChosenBeyondItsMaskBound() {
        MixedBatch.Plan p = plan(64, 64, 4096, 4096 / 4, false);
        assertTrue((long) p.n * p.totalRank > MixedBatch.STACKED_MAX_ELEMENTS);
        assertTrue(MixedBatch.choose(p, 64, 64, 4, false, true) != Strategy.STACKED);
    }

    @Test
    void theStackedStrategysCostFollowsTheAdaptersTheBatchUsesNotTheLayersAll() {
        // 64 alternating rows over 2 of a layer's 200 rank-8 adapters: R is 16, not 1,600, and the estimate is that
        // of a layer holding only those two.
        AdapterSet many = new AdapterSet();
        for (int a = 0; a < 200; a++) {
            many.put("a" + a, LoraConfig.builder().rank(8).build(), Nd4j.zeros(DataType.FLOAT, 8, 256),
                    Nd4j.zeros(DataType.FLOAT, 256, 8));
        }
        String[] per = new String[64];
        for (int i = 0; i < per.length; i++) {
            per[i] = "a" + (i % 2 == 0 ? 7 : 150);
        }
        MixedBatch.Plan p = MixedBatch.plan(per, per.length, many, true);
        assertEquals(2, p.used.length);
        assertEquals(16, p.totalRank);
        MixedBatch.Plan two = plan(256, 8, 64, 2, false);
        for (boolean cached : new boolean[] {false, true}) {
            assertEquals(MixedBatch.cost(Strategy.STACKED, two, 256, 256, 4, true, cached),
                    MixedBatch.cost(Strategy.STACKED, p, 256, 256, 4, true, cached), 1e-9, "cached " + cached);
        }
    }
}
