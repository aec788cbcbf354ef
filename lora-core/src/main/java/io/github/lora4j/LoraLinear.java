package io.github.lora4j;

import java.util.ArrayList;
import java.util.Arrays;
import java.util.Collections;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.Objects;
import java.util.SplittableRandom;
import java.util.concurrent.locks.Lock;
import java.util.concurrent.locks.ReentrantReadWriteLock;
import java.util.function.Consumer;
import java.util.function.Supplier;
import org.nd4j.linalg.api.buffer.DataType;
import org.nd4j.linalg.api.ndarray.INDArray;
import org.nd4j.linalg.api.ops.random.impl.BernoulliDistribution;
import org.nd4j.linalg.factory.Nd4j;
import org.nd4j.linalg.indexing.NDArrayIndex;

/**
 * A linear layer with a frozen weight and LoRA adapters:
 * {@code y = x W^T + b + s·(dropout(x) A^T) B^T}, with {@code W [out, in]}, {@code A [r, in]},
 * {@code B [out, r]} and {@code s} the adapter's {@link LoraConfig#scaling() scaling}.
 *
 * <pre>{@code
 * LoraLinear layer = LoraLinear.wrap(weight, bias, LoraConfig.builder().rank(8).alpha(16).build());
 * layer.train();
 * INDArray y = layer.forward(x);            // [n, in] -> [n, out]
 * INDArray dx = layer.backward(dLdy);       // fills layer.adapter("default").gradA() / gradB()
 * layer.merge();                            // W += s·B·A, for inference at base cost
 * }</pre>
 *
 * <h2>Who may change what</h2>
 * <ul>
 *   <li>{@code W} and {@code b} are referenced, not copied. Nothing in lora4j writes them except
 *       {@link #merge()} / {@link #unmerge()}, which change {@code W} in place and say so. Training never
 *       touches them, and no gradient buffer for {@code W} exists. Callers must not modify {@code W} while it
 *       is wrapped.</li>
 *   <li>{@code A} and {@code B} of each adapter are the trainable parameters; update them through
 *       {@link #updateTrainable(Consumer)} or {@link #setAdapterWeights}, both refused while merged.</li>
 * </ul>
 *
 * <h2>Data types and shapes</h2>
 * {@code W} is FLOAT or DOUBLE; bias, adapters, inputs and gradients must have the same data type (a
 * mismatch is an error, never a silent cast). Inputs are {@code [n, in]} or {@code [..., in]}; leading
 * dimensions are folded into {@code n} and restored on the output.
 *
 * <h2>Threading</h2>
 * Inference may run on many threads: {@link #forward} in eval mode only reads, under a shared lock.
 * Everything that changes state ({@code merge}, {@code unmerge}, adapter switches, weight updates,
 * {@code backward}) takes the exclusive lock, so a concurrent {@code forward} sees {@code W} and the
 * active adapter either entirely before or entirely after the change, never half-merged or mixed.
 * Training ({@code forward} in training mode followed by {@code backward}) keeps one forward cache per layer
 * and belongs on one thread.
 *
 * <h2>Errors</h2>
 * Bad arguments throw {@link IllegalArgumentException}, calls in the wrong state
 * {@link IllegalStateException}; each names what was expected and what came, and leaves the layer as it was.
 */
public final class LoraLinear {

    /** Name of the adapter that {@link #wrap} adds. */
    public static final String DEFAULT_ADAPTER = "default";

    /**
     * Reserved name that selects the base layer (no adapter) for a row of a
     * {@link #forward(INDArray, String[]) mixed-adapter batch}, as in PEFT; no adapter may take this name.
     */
    public static final String BASE_MODEL = "__base__";

    private final INDArray weight;
    private final INDArray bias;
    private final WeightLayout layout;
    private final long in;
    private final long out;
    private final DataType dataType;
    private final double maxAbsWeight;

    private final Map<String, LoraAdapter> adapters = new LinkedHashMap<>();
    private final ReentrantReadWriteLock lock = new ReentrantReadWriteLock();
    private String active;
    private boolean enabled = true;
    private volatile boolean training;
    private Merged merged;
    private ForwardCache cache;
    /**
     * The stacked A and B of the adapters of the last stacked mixed batch; every exclusive operation (adapter
     * changes, weight updates, merges) drops it, so it never outlives the arrays it was copied from.
     */
    private volatile StackedAdapters stackedAdapters;

    private LoraLinear(INDArray weight, INDArray bias, WeightLayout layout) {
        this.weight = weight;
        this.layout = layout;
        this.out = layout == WeightLayout.OUT_IN ? weight.rows() : weight.columns();
        this.in = layout == WeightLayout.OUT_IN ? weight.columns() : weight.rows();
        this.dataType = weight.dataType();
        this.bias = bias == null ? null : bias.reshape(1, out);
        this.maxAbsWeight = weight.amaxNumber().doubleValue();
    }

    /**
     * Wraps a linear layer with weight {@code [out, in]} and adds one adapter named {@value #DEFAULT_ADAPTER}.
     *
     * @param weight frozen weight {@code [out, in]}, FLOAT or DOUBLE, finite; referenced, not copied
     * @param bias   frozen bias {@code [out]} (or {@code [1, out]}) of the weight's data type, or null
     * @param config configuration of the {@value #DEFAULT_ADAPTER} adapter
     * @throws IllegalArgumentException naming the offending argument, expected vs actual
     */
    public static LoraLinear wrap(INDArray weight, INDArray bias, LoraConfig config) {
        return wrap(weight, bias, config, WeightLayout.OUT_IN);
    }

    /**
     * Wraps a linear layer whose weight is stored in {@code layout} and adds one adapter named
     * {@value #DEFAULT_ADAPTER}. With {@link WeightLayout#IN_OUT} the weight is {@code [in, out]}
     * (PEFT's {@code fan_in_fan_out}); it is used through transpose flags, never copied.
     */
    public static LoraLinear wrap(INDArray weight, INDArray bias, LoraConfig config, WeightLayout layout) {
        Objects.requireNonNull(config, "config must not be null");
        LoraLinear layer = base(weight, bias, layout);
        layer.addAdapter(DEFAULT_ADAPTER, config);
        layer.active = DEFAULT_ADAPTER;
        return layer;
    }

    /**
     * Wraps a linear layer without adding any adapter: until one is added and activated, the output is the
     * base layer's. Useful when adapters are loaded from files.
     */
    public static LoraLinear base(INDArray weight, INDArray bias, WeightLayout layout) {
        Objects.requireNonNull(layout, "layout must not be null");
        checkWeight(weight, layout);
        checkBias(bias, weight, layout == WeightLayout.OUT_IN ? weight.rows() : weight.columns());
        return new LoraLinear(weight, bias, layout);
    }

    // ---------------------------------------------------------------- shapes and parameters

    /** Input features {@code in}. */
    public long inFeatures() {
        return in;
    }

    /** Output features {@code out}. */
    public long outFeatures() {
        return out;
    }

    /** Data type of {@code W}, and so of everything the layer accepts and returns. */
    public DataType dataType() {
        return dataType;
    }

    /** How {@code W} is stored. */
    public WeightLayout layout() {
        return layout;
    }

    /** The frozen weight itself (not a copy), in its {@link #layout()}; only merge/unmerge change it. */
    public INDArray weight() {
        return weight;
    }

    /** The frozen bias as {@code [1, out]} (a view of the wrapped array), or null. */
    public INDArray bias() {
        return bias;
    }

    /** Parameters that training updates: {@code r·(in + out)} of the active adapter, 0 with none active. */
    public long trainableParameterCount() {
        return shared(() -> active == null ? 0L : adapters.get(active).parameterCount());
    }

    /** Parameters of all adapters on this layer, active or not. */
    public long adapterParameterCount() {
        return shared(() -> adapters.values().stream().mapToLong(LoraAdapter::parameterCount).sum());
    }

    /** All parameters: {@code in·out}, the bias, and every adapter's {@code r·(in + out)}. */
    public long totalParameterCount() {
        return in * out + (bias == null ? 0 : out) + adapterParameterCount();
    }

    // ---------------------------------------------------------------- adapters

    /**
     * Adds an adapter, initialised per {@code config.init()}; the active adapter does not change.
     *
     * @throws IllegalArgumentException if the name is blank or taken, or the rank exceeds {@code min(in, out)}
     */
    public void addAdapter(String name, LoraConfig config) {
        checkName(name);
        Objects.requireNonNull(config, "config must not be null");
        checkRank(config.rank());
        INDArray[] ab = initialWeights(config);
        putAdapter(name, config, ab[0], ab[1]);
    }

    private void putAdapter(String name, LoraConfig config, INDArray a, INDArray b) {
        exclusive(() -> {
            if (adapters.containsKey(name)) {
                throw new IllegalArgumentException("adapter '" + name + "' already exists; known adapters: "
                        + adapters.keySet());
            }
            adapters.put(name, new LoraAdapter(name, config, a, b));
        });
    }

    /**
     * Adds adapter {@code newName} whose update is exactly {@code Σ wᵢ·sᵢ·Bᵢ·Aᵢ} over the given adapters, by
     * concatenating their ranks (PEFT's {@code combination_type="cat"}): the new rank is {@code Σ rᵢ}, alpha equals
     * it (scaling 1), and each block is scaled by {@code sqrt(|wᵢ·sᵢ|)} on both factors (the sign on {@code A}).
     * The active adapter does not change.
     *
     * @param weights one weight per adapter; finite
     * @throws IllegalArgumentException for unknown or repeated names, mismatched lengths, a non-finite weight, a
     *                                  taken {@code newName}, or a total rank above {@code min(in, out)} (use
     *                                  {@link #addWeightedAdapterSvd} then)
     */
    public void addWeightedAdapter(String newName, List<String> adapterNames, double[] weights) {
        checkName(newName);
        List<LoraAdapter> parts = combinationParts(adapterNames, weights);
        int rank = parts.stream().mapToInt(LoraAdapter::rank).sum();
        if (rank > Math.min(in, out)) {
            throw new IllegalArgumentException("concatenated rank " + rank + " exceeds min(in, out) = "
                    + Math.min(in, out) + "; use addWeightedAdapterSvd with a target rank instead");
        }
        INDArray[] as = new INDArray[parts.size()];
        INDArray[] bs = new INDArray[parts.size()];
        for (int i = 0; i < parts.size(); i++) {
            LoraAdapter p = parts.get(i);
            double f = weights[i] * p.scaling();
            double root = Math.sqrt(Math.abs(f));
            as[i] = p.a().mul(Math.copySign(root, f));
            bs[i] = p.b().mul(root);
        }
        LoraConfig cfg = LoraConfig.builder().rank(rank).alpha(rank).init(LoraInit.ZERO).build();
        putAdapter(newName, cfg, Nd4j.concat(0, as).dup('c'), Nd4j.concat(1, bs).dup('c'));
    }

    /**
     * Adds adapter {@code newName} of rank {@code rank} holding the best rank-{@code rank} approximation (truncated
     * SVD, Eckart–Young) of {@code Σ wᵢ·sᵢ·Bᵢ·Aᵢ} (PEFT's {@code combination_type="svd"}); alpha equals the rank
     * (scaling 1). Computed from the thin factors by two QR decompositions and an SVD of a small core, in
     * {@code O((in + out)·R²)} for a total rank {@code R}; no {@code [out, in]} matrix is formed.
     *
     * @throws IllegalArgumentException as {@link #addWeightedAdapter}, or for a rank outside {@code [1, min(in, out)]}
     */
    public void addWeightedAdapterSvd(String newName, List<String> adapterNames, double[] weights, int rank) {
        checkName(newName);
        if (rank < 1) {
            throw new IllegalArgumentException("rank must be >= 1, got " + rank);
        }
        checkRank(rank);
        List<LoraAdapter> parts = combinationParts(adapterNames, weights);
        INDArray[] as = new INDArray[parts.size()];
        INDArray[] bs = new INDArray[parts.size()];
        for (int i = 0; i < parts.size(); i++) {
            LoraAdapter p = parts.get(i);
            as[i] = p.a().castTo(DataType.DOUBLE).mul(weights[i] * p.scaling());
            bs[i] = p.b().castTo(DataType.DOUBLE);
        }
        INDArray[] ba = LowRank.truncatedSvd(Nd4j.concat(1, bs), Nd4j.concat(0, as), rank);
        LoraConfig cfg = LoraConfig.builder().rank(rank).alpha(rank).init(LoraInit.ZERO).build();
        putAdapter(newName, cfg, ba[1].castTo(dataType).dup('c'), ba[0].castTo(dataType).dup('c'));
    }

    private List<LoraAdapter> combinationParts(List<String> adapterNames, double[] weights) {
        Objects.requireNonNull(adapterNames, "adapterNames must not be null");
        Objects.requireNonNull(weights, "weights must not be null");
        if (adapterNames.isEmpty() || adapterNames.size() != weights.length) {
            throw new IllegalArgumentException("expected one weight per adapter (at least one adapter), got "
                    + adapterNames.size() + " adapters and " + weights.length + " weights");
        }
        if (new java.util.HashSet<>(adapterNames).size() != adapterNames.size()) {
            throw new IllegalArgumentException("adapters to combine must be distinct, got " + adapterNames);
        }
        for (double w : weights) {
            if (!Double.isFinite(w)) {
                throw new IllegalArgumentException("weights must be finite, got " + Arrays.toString(weights));
            }
        }
        return shared(() -> {
            List<LoraAdapter> parts = new ArrayList<>();
            for (String n : adapterNames) {
                parts.add(requireAdapter(n));
            }
            return parts;
        });
    }

    /**
     * Makes {@code name} the adapter used by forward, backward, training and merge.
     *
     * @throws IllegalArgumentException for an unknown name
     * @throws IllegalStateException    while another adapter is merged into {@code W}
     */
    public void setActiveAdapter(String name) {
        exclusive(() -> {
            requireAdapter(name);
            if (merged != null && !merged.adapter.name().equals(name)) {
                throw new IllegalStateException("cannot activate adapter '" + name + "' while adapter '"
                        + merged.adapter.name() + "' is merged into W; unmerge() first");
            }
            if (!name.equals(active)) {
                cache = null;
            }
            active = name;
        });
    }

    /** Name of the active adapter, or null when none is (the layer then computes the base output). */
    public String activeAdapter() {
        return shared(() -> active);
    }

    /** Names of all adapters, in the order they were added. */
    public List<String> adapterNames() {
        return shared(() -> Collections.unmodifiableList(new ArrayList<>(adapters.keySet())));
    }

    /** The adapter called {@code name}, with its live parameters and gradients. */
    public LoraAdapter adapter(String name) {
        return shared(() -> requireAdapter(name));
    }

    /** Live {@code A [r, in]} of adapter {@code name}. */
    public INDArray loraA(String name) {
        return adapter(name).a();
    }

    /** Live {@code B [out, r]} of adapter {@code name}. */
    public INDArray loraB(String name) {
        return adapter(name).b();
    }

    /**
     * Removes an adapter. Deleting the active adapter leaves no adapter active (base output), rather than
     * silently switching to another.
     *
     * @throws IllegalArgumentException for an unknown name
     * @throws IllegalStateException    if that adapter is merged into {@code W}
     */
    public void deleteAdapter(String name) {
        exclusive(() -> {
            requireAdapter(name);
            if (merged != null && merged.adapter.name().equals(name)) {
                throw new IllegalStateException("cannot delete adapter '" + name
                        + "' while it is merged into W; unmerge() first");
            }
            adapters.remove(name);
            if (name.equals(active)) {
                active = null;
                cache = null;
            }
        });
    }

    /**
     * Copies {@code a [r, in]} and {@code b [out, r]} into adapter {@code name}.
     *
     * @throws IllegalArgumentException for an unknown name, a wrong shape or data type, or a NaN/infinite value
     * @throws IllegalStateException    if that adapter is merged into {@code W}
     */
    public void setAdapterWeights(String name, INDArray a, INDArray b) {
        Objects.requireNonNull(a, "a must not be null");
        Objects.requireNonNull(b, "b must not be null");
        exclusive(() -> {
            LoraAdapter adapter = requireAdapter(name);
            checkArray("A of adapter '" + name + "'", a, adapter.a().shape());
            checkArray("B of adapter '" + name + "'", b, adapter.b().shape());
            requireUnmerged(adapter, "set the weights of");
            adapter.a().assign(a);
            adapter.b().assign(b);
            cache = null;
        });
    }

    /**
     * Turns all adapters off: {@link #forward} then returns exactly the base layer's output.
     *
     * @throws IllegalStateException while an adapter is merged (its update is inside {@code W})
     */
    public void disableAdapters() {
        exclusive(() -> {
            if (merged != null) {
                throw new IllegalStateException("cannot disable adapters while adapter '" + merged.adapter.name()
                        + "' is merged into W; unmerge() first");
            }
            enabled = false;
            cache = null;
        });
    }

    /** Turns adapters back on after {@link #disableAdapters()}. */
    public void enableAdapters() {
        exclusive(() -> {
            enabled = true;
            cache = null;
        });
    }

    /** Whether adapters take part in the forward pass. */
    public boolean adaptersEnabled() {
        return shared(() -> enabled);
    }

    // ---------------------------------------------------------------- modes

    /** Training mode: dropout on the LoRA path, and {@link #forward} keeps what {@link #backward} needs. */
    public LoraLinear train() {
        training = true;
        return this;
    }

    /** Evaluation mode (the initial mode): no dropout, nothing cached, forward may run on many threads. */
    public LoraLinear eval() {
        training = false;
        exclusive(() -> cache = null);
        return this;
    }

    /** Whether the layer is in training mode. */
    public boolean isTraining() {
        return training;
    }

    // ---------------------------------------------------------------- forward and backward

    /**
     * Computes {@code y = x W^T + b + s·(dropout(x) A^T) B^T} with the active adapter (dropout in training mode only).
     * The merged path is a single gemm; the unmerged path adds two thin gemms accumulated into {@code y}.
     *
     * <p>In training mode the input is referenced until {@link #backward}: do not modify it in between.
     *
     * @param input {@code [n, in]} or {@code [..., in]}, of the layer's data type
     * @return a new array {@code [n, out]} (or {@code [..., out]})
     */
    public INDArray forward(INDArray input) {
        checkInput(input);
        Lock l = lock.readLock();
        l.lock();
        try {
            boolean train = training;
            // A c-order [n, in] input needs no folding; skipping the two reshapes (each builds a shape descriptor,
            // a few µs) keeps the merged path at the cost of its one gemm for small n.
            boolean flat = input.rank() == 2 && input.ordering() == 'c' && !input.isView();
            long[] outputShape = flat ? new long[] {input.rows(), out} : outputShape(input.shape());
            INDArray x = flat ? input : fold(input, in);
            long n = x.rows();
            if (n == 0) {
                return Nd4j.create(dataType, outputShape);
            }
            INDArray y = Nd4j.createUninitialized(dataType, n, out);
            baseProduct(x, y);
            LoraAdapter adapter = merged == null && enabled && active != null ? adapters.get(active) : null;
            LoraPath path = adapter == null ? null : addLoraPath(adapter, x, y, train);
            if (train) {
                cache = new ForwardCache(adapter, x, path, input.shape(), outputShape);
            }
            return flat ? y : y.reshape('c', outputShape);
        } finally {
            l.unlock();
        }
    }

    /**
     * {@link #forward(INDArray)} into a caller-provided output, for inference loops that reuse their buffers: writes
     * {@code y = x W^T + b + s·(x A^T) B^T} into {@code output} and returns it. Merged, this is exactly one gemm into
     * {@code output} (plus the bias); nothing of the output's size is allocated.
     *
     * @param input  {@code [n, in]}, of the layer's data type; not modified
     * @param output {@code [n, out]}, c-order, contiguous, of the layer's data type, not sharing memory with
     *               {@code input}; overwritten (the caller owns it and must not share it between threads)
     * @return {@code output}
     * @throws IllegalStateException    in training mode (training keeps a cache for backward: use {@link #forward(INDArray)})
     * @throws IllegalArgumentException for a wrong shape, order or data type of either array
     */
    public INDArray forwardInto(INDArray input, INDArray output) {
        checkInput(input);
        Objects.requireNonNull(output, "output must not be null");
        if (input.rank() != 2) {
            throw new IllegalArgumentException("input shape: expected [n, " + in + "], got " + Arrays.toString(input.shape()));
        }
        long[] expected = {input.rows(), out};
        if (output.dataType() != dataType || !Arrays.equals(output.shape(), expected) || output.ordering() != 'c'
                || output.isView()) {
            throw new IllegalArgumentException("output: expected a c-order, contiguous " + dataType + " array of shape "
                    + Arrays.toString(expected) + ", got " + output.dataType() + " " + Arrays.toString(output.shape())
                    + " in order '" + output.ordering() + "'" + (output.isView() ? " (a view)" : ""));
        }
        if (output.data() == input.data()) {
            throw new IllegalArgumentException("output must not share memory with input");
        }
        return shared(() -> {
            if (training) {
                throw new IllegalStateException("forwardInto is for inference; call eval() first, or use forward(input) "
                        + "in training mode");
            }
            if (input.rows() == 0) {
                return output;
            }
            baseProduct(input, output);
            LoraAdapter adapter = merged == null && enabled && active != null ? adapters.get(active) : null;
            if (adapter != null) {
                addLoraPath(adapter, input, output, false);
            }
            return output;
        });
    }

    /**
     * Inference on a batch whose rows use different adapters, in one call (PEFT's {@code adapter_names}): row
     * {@code i} of {@code [n, in]} (after folding leading dimensions) is computed with adapter
     * {@code adapterPerRow[i]}, or with the base layer where the entry is null or {@link #BASE_MODEL}. One base
     * gemm serves the whole batch. While the used adapters' total rank {@code R} is small
     * ({@code R·(in + out) <= in·out / 4}), their paths are stacked: two gemms over all adapters at once and a
     * per-row mask, a fixed number of ops for any number of adapters. Beyond that, rows are grouped per adapter
     * (permuted into contiguous blocks and back) with two thin gemms per adapter. A batch that uses a single adapter
     * gives bitwise what {@link #forward(INDArray)} gives with it active. With adapters disabled every row gets the
     * base output.
     *
     * @param adapterPerRow one name per row
     * @throws IllegalStateException    in training mode or while an adapter is merged
     * @throws IllegalArgumentException for a wrong length, an unknown name, or a bad input
     */
    public INDArray forward(INDArray input, String[] adapterPerRow) {
        checkInput(input);
        Objects.requireNonNull(adapterPerRow, "adapterPerRow must not be null");
        return shared(() -> {
            if (training) {
                throw new IllegalStateException("mixed-adapter batches are for inference; call eval() first");
            }
            if (merged != null) {
                throw new IllegalStateException("mixed-adapter batches need unmerged adapters, but adapter '"
                        + merged.adapter.name() + "' is merged into W; unmerge() first");
            }
            long[] outputShape = outputShape(input.shape());
            INDArray x = fold(input, in);
            int n = Math.toIntExact(x.rows());
            if (adapterPerRow.length != n) {
                throw new IllegalArgumentException("adapterPerRow: expected one name per row, " + n + " rows, got "
                        + adapterPerRow.length + " names");
            }
            Map<LoraAdapter, List<Integer>> groups = new LinkedHashMap<>();
            List<Integer> baseRows = new ArrayList<>();
            for (int i = 0; i < n; i++) {
                String name = adapterPerRow[i];
                if (name == null || name.equals(BASE_MODEL) || !enabled) {
                    baseRows.add(i);
                } else {
                    LoraAdapter a = adapters.get(name);
                    if (a == null) {
                        throw new IllegalArgumentException("adapterPerRow[" + i + "]: unknown adapter '" + name
                                + "'; known adapters: " + adapters.keySet() + " (or null / " + BASE_MODEL + ")");
                    }
                    groups.computeIfAbsent(a, k -> new ArrayList<>()).add(i);
                }
            }
            if (n == 0) {
                return Nd4j.create(dataType, outputShape);
            }
            if (groups.isEmpty() || (groups.size() == 1 && baseRows.isEmpty())) {
                // One path for every row: exactly what forward(x) computes for that adapter (or the base layer).
                INDArray y = Nd4j.createUninitialized(dataType, n, out);
                baseProduct(x, y);
                if (!groups.isEmpty()) {
                    addLoraPath(groups.keySet().iterator().next(), x, y, false);
                }
                return y.reshape('c', outputShape);
            }
            int totalRank = groups.keySet().stream().mapToInt(LoraAdapter::rank).sum();
            if ((double) totalRank * (in + out) <= STACKED_WORK_LIMIT * in * out) {
                return stackedMixedForward(x, n, groups, totalRank).reshape('c', outputShape);
            }
            int[] order = new int[n];
            int k = 0;
            for (int i : baseRows) {
                order[k++] = i;
            }
            for (List<Integer> rows : groups.values()) {
                for (int i : rows) {
                    order[k++] = i;
                }
            }
            boolean grouped = true;
            for (int i = 0; i < n && grouped; i++) {
                grouped = order[i] == i;
            }
            INDArray xs = grouped ? x : Nd4j.pullRows(x, 1, order);
            INDArray ys = Nd4j.createUninitialized(dataType, n, out);
            baseProduct(xs, ys);
            int start = baseRows.size();
            for (Map.Entry<LoraAdapter, List<Integer>> g : groups.entrySet()) {
                LoraAdapter a = g.getKey();
                int end = start + g.getValue().size();
                INDArray xb = xs.get(NDArrayIndex.interval(start, end), NDArrayIndex.all());
                INDArray yb = ys.get(NDArrayIndex.interval(start, end), NDArrayIndex.all());
                INDArray u = Nd4j.createUninitialized(dataType, end - start, a.rank());
                Nd4j.gemm(xb, a.a(), u, false, true, 1.0, 0.0);
                Nd4j.gemm(u, a.b(), yb, false, true, a.scaling(), 1.0);
                start = end;
            }
            INDArray y = ys;
            if (!grouped) {
                int[] inverse = new int[n];
                for (int i = 0; i < n; i++) {
                    inverse[order[i]] = i;
                }
                y = Nd4j.pullRows(ys, 1, inverse);
            }
            return y.reshape('c', outputShape);
        });
    }

    /**
     * Extra LoRA work, relative to the base product, up to which a mixed batch stacks its adapters: the stacked
     * path computes every row against every used adapter ({@code n·R·(in + out)} flops for a total rank {@code R}),
     * which is cheap next to the base product while {@code R·(in + out)} stays a fraction of {@code in·out}, and it
     * costs a fixed handful of ND4J ops however many adapters there are. Beyond it, rows are grouped per adapter.
     */
    private static final double STACKED_WORK_LIMIT = 0.25;

    /**
     * Mixed batch by stacking: {@code A_cat [R, in]} and {@code B_cat [out, R]} hold every used adapter; {@code
     * u = x A_catᵀ} gives each row its projection onto every adapter, a mask keeps (and scales by {@code sₐ}) only the
     * columns of the row's own adapter, and {@code y += u B_catᵀ}. Base rows get an all-zero mask row. Three gemms
     * for any number of adapters (the stacked arrays are cached until an adapter changes), no row permutation.
     */
    private INDArray stackedMixedForward(INDArray x, int n, Map<LoraAdapter, List<Integer>> groups, int totalRank) {
        // Adapters in the layer's own order, so that batches using the same adapters share the stacked arrays.
        List<LoraAdapter> used = new ArrayList<>();
        for (LoraAdapter a : adapters.values()) {
            if (groups.containsKey(a)) {
                used.add(a);
            }
        }
        StackedAdapters stack = stackedAdapters;
        if (stack == null || !stack.adapters().equals(used)) {
            // Readers may race to build it; each builds the same arrays from the same (read-locked) adapters.
            INDArray[] as = new INDArray[used.size()];
            INDArray[] bs = new INDArray[used.size()];
            for (int g = 0; g < as.length; g++) {
                as[g] = used.get(g).a();
                bs[g] = used.get(g).b();
            }
            stack = new StackedAdapters(List.copyOf(used), Nd4j.concat(0, as), Nd4j.concat(1, bs));
            stackedAdapters = stack;
        }
        double[] mask = new double[n * totalRank];
        int offset = 0;
        for (LoraAdapter a : used) {
            double s = a.scaling();
            for (int row : groups.get(a)) {
                Arrays.fill(mask, row * totalRank + offset, row * totalRank + offset + a.rank(), s);
            }
            offset += a.rank();
        }
        INDArray aCat = stack.a();
        INDArray bCat = stack.b();
        INDArray y = Nd4j.createUninitialized(dataType, n, out);
        baseProduct(x, y);
        INDArray u = Nd4j.createUninitialized(dataType, n, totalRank);
        Nd4j.gemm(x, aCat, u, false, true, 1.0, 0.0);   // u = x A_cat^T          [n, R]
        // Keep each row's own adapter, times its s: in Java on u's buffer (n·R elements), which costs less than
        // creating a mask array and one more ND4J op.
        if (dataType == DataType.DOUBLE) {
            java.nio.DoubleBuffer ub = u.data().asNioDouble();
            for (int i = 0; i < mask.length; i++) {
                ub.put(i, ub.get(i) * mask[i]);
            }
        } else {
            java.nio.FloatBuffer ub = u.data().asNioFloat();
            for (int i = 0; i < mask.length; i++) {
                ub.put(i, ub.get(i) * (float) mask[i]);
            }
        }
        Nd4j.gemm(u, bCat, y, false, true, 1.0, 1.0);   // y += u B_cat^T         [n, out]
        return y;
    }

    /**
     * Back-propagates {@code gradOutput = dL/dy} through the last training-mode {@link #forward}: returns
     * {@code dL/dx} and adds {@code dL/dA}, {@code dL/dB} into the active adapter's gradients. {@code W} gets no
     * gradient. Consumes the forward cache: each forward supports one backward.
     *
     * @param gradOutput same shape and data type as that forward's output
     * @throws IllegalStateException    when merged, or without a preceding training-mode forward
     * @throws IllegalArgumentException for a wrong shape or data type
     */
    public INDArray backward(INDArray gradOutput) {
        Objects.requireNonNull(gradOutput, "gradOutput must not be null");
        return exclusiveGet(() -> {
            if (merged != null) {
                throw new IllegalStateException("backward is refused while adapter '" + merged.adapter.name()
                        + "' is merged into W (its parameters would not see the gradient); unmerge() first");
            }
            ForwardCache c = cache;
            if (c == null) {
                throw new IllegalStateException("backward needs a forward in training mode first (call train(), "
                        + "then forward(x)); no forward cache is present");
            }
            if (gradOutput.dataType() != dataType) {
                throw new IllegalArgumentException("gradOutput data type: expected " + dataType + ", got "
                        + gradOutput.dataType());
            }
            if (!Arrays.equals(gradOutput.shape(), c.outputShape)) {
                throw new IllegalArgumentException("gradOutput shape: expected " + Arrays.toString(c.outputShape)
                        + " (the forward output's), got " + Arrays.toString(gradOutput.shape()));
            }
            cache = null;
            INDArray g = fold(gradOutput, out);
            long n = g.rows();
            INDArray dx = Nd4j.createUninitialized(dataType, n, in);
            // dx = g W  (the base path; W [out, in] needs no transpose, W [in, out] does)
            Nd4j.gemm(g, weight, dx, false, layout == WeightLayout.IN_OUT, 1.0, 0.0);
            LoraAdapter adapter = c.adapter;
            LoraPath p = c.path;
            if (adapter != null) {
                double s = adapter.scaling();
                INDArray gB = Nd4j.createUninitialized(dataType, n, adapter.rank());
                Nd4j.gemm(g, adapter.b(), gB, false, false, 1.0, 0.0);                  // gB = g B        [n, r]
                Nd4j.gemm(g, p.u, adapter.gradB(), true, false, s, 1.0);                // dB += s g^T u   [out, r]
                Nd4j.gemm(gB, p.xLora, adapter.gradA(), true, false, s * p.xScale, 1.0); // dA += s gB^T x  [r, in]
                if (p.mask == null) {
                    Nd4j.gemm(gB, adapter.a(), dx, false, false, s, 1.0);              // dx += s gB A
                } else {
                    INDArray t = Nd4j.createUninitialized(dataType, n, in);
                    Nd4j.gemm(gB, adapter.a(), t, false, false, s * p.xScale, 0.0);
                    dx.addi(t.muli(p.mask));
                }
            }
            return dx.reshape('c', c.inputShape);
        });
    }

    /** Clears the accumulated gradients of every adapter. */
    public void zeroGrad() {
        exclusive(() -> {
            for (LoraAdapter a : adapters.values()) {
                a.gradA().assign(0);
                a.gradB().assign(0);
            }
        });
    }

    /**
     * Runs {@code update} on the active adapter under the layer's exclusive lock: the way an optimizer changes
     * {@code A} and {@code B} in place. Does nothing when no adapter is active or adapters are disabled.
     *
     * @throws IllegalStateException while merged: changing A or B then would make the next unmerge wrong
     */
    public void updateTrainable(Consumer<LoraAdapter> update) {
        Objects.requireNonNull(update, "update must not be null");
        exclusive(() -> {
            if (merged != null) {
                throw new IllegalStateException("training is refused while adapter '" + merged.adapter.name()
                        + "' is merged into W; unmerge() first");
            }
            if (enabled && active != null) {
                update.accept(adapters.get(active));
                cache = null;
            }
        });
    }

    // ---------------------------------------------------------------- merge

    /** {@link #merge(MergeMode) Merges} the active adapter the {@link MergeMode#EXACT exact} way. */
    public void merge() {
        merge(MergeMode.EXACT);
    }

    /**
     * Folds the active adapter into {@code W} in place: {@code W += s·B·A} ({@code W^T += ...} for
     * {@link WeightLayout#IN_OUT}). Afterwards forward costs one gemm; backward and training are refused until
     * {@link #unmerge()}. No {@code [out, in]} temporary is allocated.
     *
     * @throws IllegalStateException if an adapter is already merged, no adapter is active, adapters are
     *                               disabled, or the result would not be finite; {@code W} is then unchanged
     */
    public void merge(MergeMode mode) {
        Objects.requireNonNull(mode, "mode must not be null");
        exclusive(() -> {
            if (merged != null) {
                throw new IllegalStateException("adapter '" + merged.adapter.name()
                        + "' is already merged into W; unmerge() before merging again");
            }
            if (!enabled) {
                throw new IllegalStateException("cannot merge while adapters are disabled; enableAdapters() first");
            }
            if (active == null) {
                throw new IllegalStateException("no active adapter to merge; adapters: " + adapters.keySet());
            }
            LoraAdapter adapter = adapters.get(active);
            double maxA = maxAbsOrNaN(adapter.a());
            double maxB = maxAbsOrNaN(adapter.b());
            if (Double.isNaN(maxA) || Double.isNaN(maxB)) {
                throw new IllegalStateException("cannot merge adapter '" + adapter.name()
                        + "': its A or B holds NaN or infinity (diverged training?); W left unchanged");
            }
            double s = adapter.scaling();
            ExactMerge.Record record = null;
            MergeMode done = mode;
            if (mode == MergeMode.FAST && fastMergeCannotOverflow(adapter, maxA, maxB)) {
                deltaInto(weight, adapter, s);
            } else {
                record = ExactMerge.merge(weight, layout == WeightLayout.IN_OUT, adapter.a(), adapter.b(), s);
                done = MergeMode.EXACT;
            }
            merged = new Merged(adapter, done, record);
            cache = null;
        });
    }

    /**
     * Takes the merged adapter out of {@code W} again. After an {@link MergeMode#EXACT} merge {@code W} is bitwise
     * what it was; after a {@link MergeMode#FAST} one it may differ by an ulp of the merged values.
     *
     * @throws IllegalStateException if nothing is merged
     */
    public void unmerge() {
        exclusive(() -> {
            if (merged == null) {
                throw new IllegalStateException("no adapter is merged into W; nothing to unmerge");
            }
            LoraAdapter adapter = merged.adapter;
            double s = adapter.scaling();
            if (merged.record != null) {
                ExactMerge.unmerge(weight, layout == WeightLayout.IN_OUT, adapter.a(), adapter.b(), s, merged.record);
            } else {
                deltaInto(weight, adapter, -s);
            }
            merged = null;
        });
    }

    /** Whether an adapter is merged into {@code W}. */
    public boolean isMerged() {
        return shared(() -> merged != null);
    }

    /** The mode of the current merge, or null when not merged. */
    public MergeMode mergeMode() {
        return shared(() -> merged == null ? null : merged.mode);
    }

    /**
     * Bytes that the current exact merge keeps to make unmerge bit-exact (the remembered elements), 0 for a fast
     * merge or when not merged. Compare with {@code W}'s own {@code in·out·bytesPerElement}.
     */
    public long exactMergeBytes() {
        return shared(() -> merged == null || merged.record == null ? 0L : merged.record.bytes());
    }

    /**
     * A new array {@code W + s·B·A} of the active adapter (PEFT's merge-and-unload), in {@code W}'s layout,
     * without touching the layer. With no active adapter, adapters disabled, or the adapter already merged, it is
     * a copy of {@code W}.
     */
    public INDArray mergedWeight() {
        return shared(() -> {
            INDArray w = weight.dup('c');
            if (merged == null && enabled && active != null) {
                LoraAdapter adapter = adapters.get(active);
                deltaInto(w, adapter, adapter.scaling());
            }
            return w;
        });
    }

    @Override
    public String toString() {
        return shared(() -> "LoraLinear{in=" + in + ", out=" + out + ", dataType=" + dataType + ", layout=" + layout
                + ", bias=" + (bias != null) + ", adapters=" + adapters.keySet() + ", active=" + active
                + ", enabled=" + enabled + ", merged=" + (merged == null ? "no" : merged.adapter.name() + " (" + merged.mode + ")")
                + ", training=" + training + "}");
    }

    // ---------------------------------------------------------------- internals

    /** y = x W^T (+ b), written into y. */
    private void baseProduct(INDArray x, INDArray y) {
        Nd4j.gemm(x, weight, y, false, layout == WeightLayout.OUT_IN, 1.0, 0.0);
        if (bias != null) {
            y.addiRowVector(bias);
        }
    }

    /** y += s·(dropout(x) A^T) B^T, fused into two gemms; returns what backward needs. */
    private LoraPath addLoraPath(LoraAdapter adapter, INDArray x, INDArray y, boolean train) {
        INDArray xLora = x;
        INDArray mask = null;
        double xScale = 1.0;
        double p = adapter.config().dropout();
        if (train && p > 0) {
            mask = Nd4j.createUninitialized(dataType, x.shape());
            Nd4j.getExecutioner().exec(new BernoulliDistribution(mask, 1.0 - p), adapter.dropoutRng());
            xLora = x.mul(mask);
            xScale = 1.0 / (1.0 - p); // inverted dropout, folded into gemm's alpha
        }
        INDArray u = Nd4j.createUninitialized(dataType, x.rows(), adapter.rank());
        Nd4j.gemm(xLora, adapter.a(), u, false, true, xScale, 0.0);              // u = x A^T           [n, r]
        Nd4j.gemm(u, adapter.b(), y, false, true, adapter.scaling(), 1.0);       // y += s u B^T        [n, out]
        return new LoraPath(xLora, mask, u, xScale);
    }

    /** target += scale·B·A in W's layout: one gemm, accumulated in place. */
    private void deltaInto(INDArray target, LoraAdapter adapter, double scale) {
        if (layout == WeightLayout.OUT_IN) {
            Nd4j.gemm(adapter.b(), adapter.a(), target, false, false, scale, 1.0);
        } else {
            Nd4j.gemm(adapter.a(), adapter.b(), target, true, true, scale, 1.0);
        }
    }

    /** |W + s·B·A| <= max|W| + s·r·max|A|·max|B|: below the type's largest value, no element can overflow. */
    private boolean fastMergeCannotOverflow(LoraAdapter adapter, double maxA, double maxB) {
        double bound = maxAbsWeight + Math.abs(adapter.scaling()) * adapter.rank() * maxA * maxB;
        double limit = dataType == DataType.DOUBLE ? Double.MAX_VALUE : Float.MAX_VALUE;
        return bound < limit * 0.5;
    }

    private INDArray[] initialWeights(LoraConfig config) {
        int r = config.rank();
        double[] a = new double[Math.toIntExact(r * in)];
        SplittableRandom rng = new SplittableRandom(config.seed());
        switch (config.init()) {
            case KAIMING_UNIFORM:
                // PEFT: kaiming_uniform_(A, a=sqrt(5)) gives bound = sqrt(6 / ((1 + 5) · in)) = 1 / sqrt(in).
                double bound = 1.0 / Math.sqrt(in);
                for (int i = 0; i < a.length; i++) {
                    a[i] = rng.nextDouble(-bound, bound);
                }
                break;
            case GAUSSIAN:
                for (int i = 0; i < a.length; i++) {
                    a[i] = rng.nextGaussian() / r;
                }
                break;
            case ZERO:
                break;
            default:
                throw new AssertionError(config.init());
        }
        INDArray aArr = Nd4j.createFromArray(a).castTo(dataType).reshape('c', r, in);
        INDArray bArr = Nd4j.zeros(dataType, out, r);
        return new INDArray[] {aArr, bArr};
    }

    private LoraAdapter requireAdapter(String name) {
        Objects.requireNonNull(name, "adapter name must not be null");
        LoraAdapter a = adapters.get(name);
        if (a == null) {
            throw new IllegalArgumentException("unknown adapter '" + name + "'; known adapters: " + adapters.keySet());
        }
        return a;
    }

    private void requireUnmerged(LoraAdapter adapter, String action) {
        if (merged != null && merged.adapter == adapter) {
            throw new IllegalStateException("cannot " + action + " adapter '" + adapter.name()
                    + "' while it is merged into W; unmerge() first");
        }
    }

    private void checkRank(int r) {
        long max = Math.min(in, out);
        if (r > max) {
            throw new IllegalArgumentException("rank must be <= min(in, out) = " + max + " for this " + out + "×" + in
                    + " layer, got " + r);
        }
    }

    private static void checkName(String name) {
        Objects.requireNonNull(name, "adapter name must not be null");
        if (name.isBlank()) {
            throw new IllegalArgumentException("adapter name must not be blank, got '" + name + "'");
        }
        if (name.equals(BASE_MODEL)) {
            throw new IllegalArgumentException("adapter name '" + BASE_MODEL + "' is reserved for the base layer");
        }
    }

    private void checkInput(INDArray input) {
        Objects.requireNonNull(input, "input must not be null");
        if (input.dataType() != dataType) {
            throw new IllegalArgumentException("input data type: expected " + dataType + " (the weight's), got "
                    + input.dataType() + "; convert explicitly with input.castTo(DataType." + dataType + ")");
        }
        if (input.rank() < 1 || input.size(-1) != in) {
            throw new IllegalArgumentException("input shape: expected [..., " + in + "] (last dimension = in), got "
                    + Arrays.toString(input.shape()));
        }
    }

    private void checkArray(String what, INDArray array, long[] shape) {
        if (array.dataType() != dataType) {
            throw new IllegalArgumentException(what + ": expected data type " + dataType + ", got " + array.dataType());
        }
        if (!Arrays.equals(array.shape(), shape)) {
            throw new IllegalArgumentException(what + ": expected shape " + Arrays.toString(shape) + ", got "
                    + Arrays.toString(array.shape()));
        }
        checkFinite(what, array);
    }

    /**
     * {@code max |x|} over a small array, or NaN if any element is NaN or infinite: one Java pass, because the four
     * ND4J ops of a finiteness check plus an amax cost about as much as a merge's gemm on a 2-core machine.
     */
    private static double maxAbsOrNaN(INDArray array) {
        INDArray c = array.isView() || array.ordering() != 'c' ? array.dup('c') : array;
        int n = Math.toIntExact(c.length());
        int off = Math.toIntExact(c.offset());
        double max = 0;
        if (c.dataType() == DataType.DOUBLE) {
            java.nio.DoubleBuffer buf = c.data().asNioDouble();
            for (int i = 0; i < n; i++) {
                double v = Math.abs(buf.get(off + i));
                if (!(v <= Double.MAX_VALUE)) {
                    return Double.NaN;
                }
                max = Math.max(max, v);
            }
        } else {
            java.nio.FloatBuffer buf = c.data().asNioFloat();
            for (int i = 0; i < n; i++) {
                float v = Math.abs(buf.get(off + i));
                if (!(v <= Float.MAX_VALUE)) {
                    return Double.NaN;
                }
                max = Math.max(max, v);
            }
        }
        return max;
    }

    private static boolean isFinite(INDArray array) {
        return !array.isNaN().any() && !array.isInfinite().any();
    }

    private static void checkFinite(String what, INDArray array) {
        if (!isFinite(array)) {
            throw new IllegalArgumentException(what + ": expected finite values, found NaN or infinity");
        }
    }

    private static void checkWeight(INDArray weight, WeightLayout layout) {
        Objects.requireNonNull(weight, "weight must not be null");
        String expected = layout == WeightLayout.OUT_IN ? "[out, in]" : "[in, out]";
        if (weight.rank() != 2 || weight.rows() < 1 || weight.columns() < 1) {
            throw new IllegalArgumentException("weight: expected a non-empty matrix " + expected + ", got shape "
                    + Arrays.toString(weight.shape()));
        }
        if (weight.dataType() != DataType.FLOAT && weight.dataType() != DataType.DOUBLE) {
            throw new IllegalArgumentException("weight: expected data type FLOAT or DOUBLE, got " + weight.dataType());
        }
        checkFinite("weight", weight);
    }

    private static void checkBias(INDArray bias, INDArray weight, long out) {
        if (bias == null) {
            return;
        }
        if (bias.dataType() != weight.dataType()) {
            throw new IllegalArgumentException("bias: expected data type " + weight.dataType() + " (the weight's), got "
                    + bias.dataType());
        }
        boolean vector = bias.rank() == 1 || (bias.rank() == 2 && bias.rows() == 1);
        if (!vector || bias.length() != out) {
            throw new IllegalArgumentException("bias: expected shape [" + out + "] (out), got "
                    + Arrays.toString(bias.shape()));
        }
        checkFinite("bias", bias);
    }

    /** Folds {@code [..., width]} into a c-order {@code [n, width]} (a view when the input is c-contiguous). */
    private static INDArray fold(INDArray a, long width) {
        return a.reshape('c', a.length() / width, width);
    }

    private long[] outputShape(long[] inputShape) {
        long[] s = inputShape.clone();
        s[s.length - 1] = out;
        return s;
    }

    private <T> T shared(Supplier<T> f) {
        Lock l = lock.readLock();
        l.lock();
        try {
            return f.get();
        } finally {
            l.unlock();
        }
    }

    private void exclusive(Runnable f) {
        exclusiveGet(() -> {
            f.run();
            return null;
        });
    }

    private <T> T exclusiveGet(Supplier<T> f) {
        Lock l = lock.writeLock();
        l.lock();
        try {
            stackedAdapters = null;
            return f.get();
        } finally {
            l.unlock();
        }
    }

    /** Used adapters (in layer order) with their A stacked by rows {@code [R, in]} and B by columns {@code [out, R]}. */
    private record StackedAdapters(List<LoraAdapter> adapters, INDArray a, INDArray b) {
    }

    /** The LoRA path's intermediates: the (dropped-out) input, its mask, u = x A^T and the dropout scale. */
    private static final class LoraPath {
        final INDArray xLora;
        final INDArray mask;
        final INDArray u;
        final double xScale;

        LoraPath(INDArray xLora, INDArray mask, INDArray u, double xScale) {
            this.xLora = xLora;
            this.mask = mask;
            this.u = u;
            this.xScale = xScale;
        }
    }

    /** What backward needs from the forward pass; {@code path} is null when no adapter took part. */
    private static final class ForwardCache {
        final LoraAdapter adapter;
        final INDArray x;
        final LoraPath path;
        final long[] inputShape;
        final long[] outputShape;

        ForwardCache(LoraAdapter adapter, INDArray x, LoraPath path, long[] inputShape, long[] outputShape) {
            this.adapter = path == null ? null : adapter;
            this.x = x;
            this.path = path;
            this.inputShape = inputShape;
            this.outputShape = outputShape;
        }
    }

    /** Which adapter is inside W, how, and what an exact unmerge needs. */
    private static final class Merged {
        final LoraAdapter adapter;
        final MergeMode mode;
        final ExactMerge.Record record;

        Merged(LoraAdapter adapter, MergeMode mode, ExactMerge.Record record) {
            this.adapter = adapter;
            this.mode = mode;
            this.record = record;
        }
    }
}
