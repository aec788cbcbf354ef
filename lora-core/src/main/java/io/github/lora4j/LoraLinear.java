package io.github.lora4j;

import java.util.ArrayList;
import java.util.Arrays;
import java.util.Collections;
import java.util.List;
import java.util.Objects;
import java.util.function.Consumer;
import org.nd4j.linalg.api.buffer.DataType;
import org.nd4j.linalg.api.ndarray.INDArray;
import org.nd4j.linalg.factory.Nd4j;

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
 * <h2>DoRA</h2>
 * An adapter made with {@link LoraConfig#useDora() useDora} is PEFT's DoRA: it also has a trainable magnitude
 * {@code m [out]} ({@link LoraAdapter#magnitude()}), initialised to the row norms of {@code W}, and the layer computes
 * {@code y = (m / ‖W + s·B·A‖_row) ⊙ (x (W + s·B·A)^T) + b}, the norm a constant in backward, as PEFT does (see
 * {@code DoraPath} for the dropout case and the gradients, docs/dora.md for the whole story). Merging folds
 * {@code W' = (m / ‖W + s·B·A‖_row) ⊙ (W + s·B·A)} into W, exactly reversibly; mixed-adapter batches refuse DoRA
 * adapters, as PEFT does.
 *
 * <h2>Who may change what</h2>
 * {@code W} and {@code b} are referenced, not copied. Nothing in lora4j writes them except {@link #merge()} /
 * {@link #unmerge()}, which change {@code W} in place and say so; training never touches them, and no gradient
 * buffer for {@code W} exists. Callers must not modify {@code W} while it is wrapped. {@code A} and {@code B} of
 * each adapter are the trainable parameters; update them through {@link #updateTrainable(Consumer)} or
 * {@link #setAdapterWeights}, both refused while merged.
 *
 * <h2>Seeds</h2>
 * {@code A} and the dropout masks come from {@link LoraConfig#seed()} alone: two layers wrapped one at a time with
 * the same config start identical. Wrap each with {@link LoraConfig#forModule config.forModule(path)}, the rule
 * {@code LoraModel} applies, to give each its own stream.
 *
 * <h2>Data types and shapes</h2>
 * {@code W} is FLOAT or DOUBLE; bias, adapters, inputs and gradients must have the same data type (a
 * mismatch is an error, never a silent cast). Inputs are {@code [n, in]} or {@code [..., in]}; leading
 * dimensions are folded into {@code n} and restored on the output.
 *
 * <h2>Threading</h2>
 * Inference may run on many threads: {@link #forward} in eval mode only reads, under a shared lock. Everything
 * that changes state ({@code merge}, {@code unmerge}, adapter switches, weight updates, {@code backward}) takes the
 * exclusive lock, so a concurrent {@code forward} sees {@code W} and the active adapter entirely before or entirely
 * after the change, never half-merged or mixed. Training keeps one forward cache per layer and belongs on one thread.
 *
 * <h2>Speed</h2>
 * On ND4J's CPU backend every numeric call goes straight to the OpenBLAS that nd4j-native ships (detected at run
 * time; other backends use {@code Nd4j.gemm}); no ND4J element-wise op runs on the hot path. {@link #forwardInto}
 * saves the fresh output; {@link #backward(INDArray, boolean) backward(g, false)} skips {@code dL/dx}.
 *
 * <h2>Errors</h2>
 * Bad arguments throw {@link IllegalArgumentException}, calls in the wrong state
 * {@link IllegalStateException}; each names what was expected and what came, and leaves the layer as it was.
 */
public final class LoraLinear implements LoraTrainable {

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
    /** {@code max |W|} for FAST merge's overflow bound; recomputed when {@link #mergeAndUnload()} keeps an update. */
    private double maxAbsWeight;

    private final AdapterSet adapters = new AdapterSet();
    private final MixedBatch mixedBatch = new MixedBatch();
    private final LayerLock lock = new LayerLock(mixedBatch::invalidate);
    private final TrainingCache cache = new TrainingCache();
    private final Merge merge = new Merge();
    private volatile boolean training;

    private LoraLinear(INDArray weight, INDArray bias, WeightLayout layout) {
        this.weight = weight;
        this.layout = layout;
        this.out = layout == WeightLayout.OUT_IN ? weight.rows() : weight.columns();
        this.in = layout == WeightLayout.OUT_IN ? weight.columns() : weight.rows();
        this.dataType = weight.dataType();
        this.bias = bias == null ? null : bias.reshape(1, out);
        this.maxAbsWeight = Checks.maxAbsOrNaN(weight);
    }

    /**
     * Wraps a linear layer with weight {@code [out, in]} and adds one adapter named {@value #DEFAULT_ADAPTER}.
     *
     * @param weight frozen weight {@code [out, in]}, FLOAT or DOUBLE, finite; referenced, not copied
     * @param bias   frozen bias {@code [out]} (or {@code [1, out]}) of the weight's data type, or null
     * @param config configuration of the {@value #DEFAULT_ADAPTER} adapter; its scaling must be finite in W's type
     * @return a layer in eval mode with the {@value #DEFAULT_ADAPTER} adapter active and nothing merged
     * @throws IllegalArgumentException naming the offending argument, expected vs actual
     */
    public static LoraLinear wrap(INDArray weight, INDArray bias, LoraConfig config) {
        return wrap(weight, bias, config, WeightLayout.OUT_IN);
    }

    /**
     * Wraps a linear layer whose weight is stored in {@code layout} and adds one adapter named
     * {@value #DEFAULT_ADAPTER}. With {@link WeightLayout#IN_OUT} the weight is {@code [in, out]}
     * (PEFT's {@code fan_in_fan_out}); it is used through transpose flags, never copied.
     *
     * @param weight frozen weight in {@code layout}, FLOAT or DOUBLE, finite; referenced, not copied
     * @param bias   frozen bias {@code [out]} (or {@code [1, out]}) of the weight's data type, or null
     * @param config configuration of the {@value #DEFAULT_ADAPTER} adapter; its scaling must be finite in W's type
     * @param layout how {@code weight} is stored
     * @return a layer in eval mode with the {@value #DEFAULT_ADAPTER} adapter active and nothing merged
     * @throws IllegalArgumentException naming the offending argument, expected vs actual
     */
    public static LoraLinear wrap(INDArray weight, INDArray bias, LoraConfig config, WeightLayout layout) {
        Objects.requireNonNull(config, "config must not be null");
        LoraLinear layer = base(weight, bias, layout);
        layer.addAdapter(DEFAULT_ADAPTER, config);
        layer.adapters.activate(DEFAULT_ADAPTER);
        return layer;
    }

    /**
     * Wraps a linear layer without adding any adapter: until one is added and activated, the output is the
     * base layer's. Useful when adapters are loaded from files.
     *
     * @param weight frozen weight in {@code layout}, FLOAT or DOUBLE, finite; referenced, not copied
     * @param bias   frozen bias {@code [out]} (or {@code [1, out]}) of the weight's data type, or null
     * @param layout how {@code weight} is stored
     * @return a layer in eval mode without adapters
     * @throws IllegalArgumentException for an empty, non-matrix, non-finite or not FLOAT/DOUBLE weight, or a bad bias
     */
    public static LoraLinear base(INDArray weight, INDArray bias, WeightLayout layout) {
        Objects.requireNonNull(layout, "layout must not be null");
        Checks.checkWeight(weight, layout);
        Checks.checkBias(bias, weight, layout == WeightLayout.OUT_IN ? weight.rows() : weight.columns());
        return new LoraLinear(weight, bias, layout);
    }

    /** @return the input features {@code in} */
    public long inFeatures() {
        return in;
    }

    /** @return the output features {@code out} */
    public long outFeatures() {
        return out;
    }

    /** @return the data type of {@code W}, and so of everything the layer accepts and returns */
    public DataType dataType() {
        return dataType;
    }

    /** @return how {@code W} is stored */
    public WeightLayout layout() {
        return layout;
    }

    /** @return the frozen weight itself (not a copy), in its {@link #layout()}; only merge/unmerge change it */
    public INDArray weight() {
        return weight;
    }

    /** @return the frozen bias as {@code [1, out]} (a view of the wrapped array), or null */
    public INDArray bias() {
        return bias;
    }

    /**
     * @return the parameters that training updates: {@code r·(in + out)} of the active adapter ({@code + out} for a
     *         DoRA magnitude), 0 with none active
     */
    public long trainableParameterCount() {
        return lock.shared(() -> adapters.active() == null ? 0L : adapters.get(adapters.active()).parameterCount());
    }

    /** @return the parameters of all adapters on this layer, active or not */
    public long adapterParameterCount() {
        return lock.shared(() -> adapters.all().stream().mapToLong(LoraAdapter::parameterCount).sum());
    }

    /** @return all parameters: {@code in·out}, the bias, and every adapter's {@code r·(in + out)} */
    public long totalParameterCount() {
        return in * out + (bias == null ? 0 : out) + adapterParameterCount();
    }

    /**
     * Adds an adapter, initialised per {@code config.init()}; the active adapter does not change.
     *
     * @param name   the new adapter's name: not blank, not taken, not {@value #BASE_MODEL}
     * @param config its rank, alpha, init and dropout
     * @throws IllegalArgumentException if the name is blank or taken, the rank is below 1 (ranks above
     *                                  {@code min(in, out)} are accepted, as in PEFT), or the scaling {@code s} is not a finite value of the layer's data type; for DoRA, if a
     *                                  row of {@code W} is zero (its direction is undefined)
     * @throws IllegalStateException    for DoRA, while an adapter is merged (the magnitude starts from the unmerged W)
     */
    public void addAdapter(String name, LoraConfig config) {
        Checks.checkNewAdapter(name, config, in, out, dataType);
        INDArray[] ab = AdapterSet.initialWeights(config, in, out, dataType);
        lock.exclusive(() -> {
            Dora dora = null;
            if (config.useDora()) {
                merge.refuseWhileMerged("adding a DoRA adapter (its magnitude starts from the unmerged W)");
                dora = Dora.create(weight, layout, ab[0], ab[1], config.scaling());   // m = ‖W + s·B·A‖_row
            }
            adapters.put(name, config, ab[0], ab[1], dora);
        });
    }

    /**
     * Adds adapter {@code newName} whose update is exactly {@code Σ wᵢ·sᵢ·Bᵢ·Aᵢ} over the given adapters, by
     * concatenating their ranks (PEFT's {@code combination_type="cat"}): the new rank is {@code Σ rᵢ}, alpha equals
     * it (scaling 1), and each block is scaled by {@code sqrt(|wᵢ·sᵢ|)} on both factors (the sign on {@code A}).
     * The active adapter does not change.
     *
     * @param newName      the new adapter's name: not blank, not taken
     * @param adapterNames the adapters to combine, each once; they are not changed
     * @param weights      one weight per adapter; finite
     * @throws IllegalArgumentException for unknown or repeated names, mismatched lengths, a non-finite weight or result
     *                                  (in the layer's type) or a taken name; nothing is added then. The total rank
     *                                  may exceed {@code min(in, out)} (use {@link #addWeightedAdapterSvd} to cap it)
     */
    public void addWeightedAdapter(String newName, List<String> adapterNames, double[] weights) {
        AdapterCombination.addConcatenated(newName, adapterNames, weights, adapters, lock);
    }

    /**
     * Adds adapter {@code newName} of rank {@code rank} holding the best rank-{@code rank} approximation (truncated
     * SVD, Eckart–Young) of {@code Σ wᵢ·sᵢ·Bᵢ·Aᵢ} (PEFT's {@code combination_type="svd"}); alpha equals the rank
     * (scaling 1). From the thin factors (two QRs, an SVD of a small core: {@code O((in + out)·R²)} for a total rank
     * {@code R}); no {@code [out, in]} matrix is formed.
     *
     * @param newName      the new adapter's name: not blank, not taken
     * @param adapterNames the adapters to combine, each once; they are not changed
     * @param weights      one weight per adapter; finite
     * @param rank         the new adapter's rank, in {@code [1, min(in, out)]} (a truncated SVD has no more)
     * @throws IllegalArgumentException as {@link #addWeightedAdapter}, or for a rank outside {@code [1, min(in, out)]}
     */
    public void addWeightedAdapterSvd(String newName, List<String> adapterNames, double[] weights, int rank) {
        AdapterCombination.addSvd(newName, adapterNames, weights, rank, adapters, lock, in, out, dataType);
    }

    /**
     * Makes {@code name} the adapter used by forward, backward, training and merge.
     *
     * @param name an adapter of this layer
     * @throws IllegalArgumentException for an unknown name
     * @throws IllegalStateException    while another adapter is merged into {@code W}
     */
    public void setActiveAdapter(String name) {
        lock.exclusive(() -> adapters.activate(name, merge, cache));
    }

    /** @return the name of the active adapter, or null when none is (the layer then computes the base output) */
    public String activeAdapter() {
        return lock.shared(adapters::active);
    }

    /** @return the names of all adapters, in the order they were added (an unmodifiable copy) */
    public List<String> adapterNames() {
        return lock.shared(() -> Collections.unmodifiableList(adapters.names()));
    }

    /**
     * @param name an adapter of this layer
     * @return the adapter called {@code name}, with its live parameters and gradients (not copies)
     * @throws IllegalArgumentException for an unknown name
     */
    public LoraAdapter adapter(String name) {
        return lock.shared(() -> adapters.require(name));
    }

    /**
     * @param name an adapter of this layer, as for {@link #adapter}, which refuses unknown names
     * @return its live {@code A [r, in]} (not a copy)
     */
    public INDArray loraA(String name) {
        return adapter(name).a();
    }

    /**
     * @param name an adapter of this layer, as for {@link #adapter}, which refuses unknown names
     * @return its live {@code B [out, r]} (not a copy)
     */
    public INDArray loraB(String name) {
        return adapter(name).b();
    }

    /**
     * Removes an adapter. Deleting the active adapter leaves none active (base output), not silently another.
     *
     * @param name an adapter of this layer
     * @throws IllegalArgumentException for an unknown name
     * @throws IllegalStateException    if that adapter is merged into {@code W}
     */
    public void deleteAdapter(String name) {
        lock.exclusive(() -> adapters.delete(name, merge, cache));
    }

    /**
     * Sets the run-time strength of adapter {@code name} (PEFT's {@code set_scale}, llama.cpp's
     * {@code --lora-scaled}): its scaling becomes {@code s' = scale·alpha / r} ({@code scale·alpha / sqrt(r)} with
     * rsLoRA), bitwise the scaling of an adapter made with {@code alpha·scale}. Forward, backward, merge, mixed
     * batches, weighted combinations and saved files use it; {@code scale = 1} restores the config's scaling exactly.
     * The config itself is unchanged ({@link LoraAdapter#config()}); see {@link LoraAdapter#scale()}. A pending
     * training forward of this adapter is dropped.
     *
     * @param name  an adapter of this layer
     * @param scale any finite value (0 turns the adapter off, negative values invert it)
     * @throws IllegalArgumentException for an unknown name, or a scale that is not finite or makes {@code s'} not a
     *                                  finite value of the layer's data type
     * @throws IllegalStateException    while that adapter is merged into {@code W} (unmerge first)
     */
    public void setAdapterScale(String name, double scale) {
        lock.exclusive(() -> adapters.setScale(name, scale, dataType, merge, cache));
    }

    /**
     * Copies {@code a [r, in]} and {@code b [out, r]} into adapter {@code name}; a pending training forward of this
     * adapter (not of another) is dropped, since its backward would mix old and new weights.
     *
     * @param name an adapter of this layer
     * @param a    the new {@code A [r, in]} of the layer's data type; copied, not referenced
     * @param b    the new {@code B [out, r]} of the layer's data type; copied, not referenced
     * @throws IllegalArgumentException for an unknown name, a wrong shape or data type, or a NaN/infinite value
     * @throws IllegalStateException    if that adapter is merged into {@code W}
     */
    public void setAdapterWeights(String name, INDArray a, INDArray b) {
        lock.exclusive(() -> adapters.setWeights(name, a, b, null, dataType, merge, cache));
    }

    /**
     * {@link #setAdapterWeights(String, INDArray, INDArray)} for a DoRA adapter, with its magnitude too: all three
     * are checked before any is copied.
     *
     * @param name      a DoRA adapter of this layer
     * @param a         the new {@code A [r, in]} of the layer's data type; copied, not referenced
     * @param b         the new {@code B [out, r]} of the layer's data type; copied, not referenced
     * @param magnitude the new magnitude {@code m [out]} (PEFT's {@code lora_magnitude_vector}) of the layer's data
     *                  type; copied, not referenced
     * @throws IllegalArgumentException for an unknown name, a plain LoRA adapter, a wrong shape or data type, or a
     *                                  NaN/infinite value
     * @throws IllegalStateException    if that adapter is merged into {@code W}
     */
    public void setAdapterWeights(String name, INDArray a, INDArray b, INDArray magnitude) {
        Objects.requireNonNull(magnitude, "magnitude must not be null");
        lock.exclusive(() -> adapters.setWeights(name, a, b, magnitude, dataType, merge, cache));
    }

    /**
     * Turns all adapters off: {@link #forward} then returns exactly the base layer's output.
     *
     * @throws IllegalStateException while an adapter is merged (its update is inside {@code W})
     */
    public void disableAdapters() {
        lock.exclusive(() -> adapters.enable(false, merge, cache));
    }

    /** Turns adapters back on after {@link #disableAdapters()}. */
    public void enableAdapters() {
        lock.exclusive(() -> adapters.enable(true, merge, cache));
    }

    /** @return whether adapters take part in the forward pass */
    public boolean adaptersEnabled() {
        return lock.shared(adapters::enabled);
    }

    /** @return this layer, in training mode: dropout on the LoRA path, {@link #forward} keeps what backward needs */
    public LoraLinear train() {
        training = true;
        return this;
    }

    /** @return this layer, in evaluation mode (the initial one): no dropout, nothing cached, many threads may read */
    public LoraLinear eval() {
        training = false;
        lock.exclusive(cache::drop);
        return this;
    }

    /** @return whether the layer is in training mode */
    public boolean isTraining() {
        return training;
    }

    /**
     * Computes {@code y = x W^T + b + s·(dropout(x) A^T) B^T} with the active adapter (dropout in training mode only).
     * The merged path is a single gemm; the unmerged path adds two thin gemms accumulated into {@code y}.
     *
     * <p>In training mode the input is referenced until {@link #backward}: do not modify it in between. A training
     * forward of an empty batch drops any earlier forward's cache, so a following {@code backward} is refused rather
     * than matched to an older batch. The output is a new array, whose fresh memory costs about as much as the gemm
     * for large outputs: inference loops that can reuse a buffer should call {@link #forwardInto}.
     *
     * @param input {@code [n, in]} or {@code [..., in]}, of the layer's data type; not modified
     * @return a new array {@code [n, out]} (or {@code [..., out]})
     * @throws IllegalArgumentException for a wrong data type or last dimension
     */
    public INDArray forward(INDArray input) {
        Checks.checkInput(input, dataType, in);
        return lock.shared(() -> {
            boolean train = training;
            // A c-order [n, in] input needs no folding; skipping the two reshapes (each builds a shape descriptor,
            // a few µs) keeps the merged path at the cost of its one gemm for small n.
            boolean flat = input.rank() == 2 && input.ordering() == 'c' && !input.isView();
            long[] outputShape = flat ? new long[] {input.rows(), out} : Kernels.withLast(input.shape(), out);
            INDArray x = flat ? input : Kernels.fold(input, in);
            long n = x.rows();
            if (n == 0) {
                cache.dropIf(train);
                return Nd4j.create(dataType, outputShape);
            }
            INDArray y = Nd4j.createUninitialized(dataType, n, out);
            LoraAdapter adapter = pathAdapter();
            LoraPath.Scratch scratch = adapter == null ? null : cache.take();
            LoraPath path = adaptedProduct(adapter, x, y, train, scratch);
            cache.keep(train, path, scratch, input.shape(), outputShape);
            return flat ? y : y.reshape('c', outputShape);
        });
    }

    /**
     * {@link #forward(INDArray)} into a caller-provided output, for inference loops that reuse their buffers: writes
     * {@code y = x W^T + b + s·(x A^T) B^T} into {@code output} and returns it. Merged, this is exactly one gemm into
     * {@code output}; nothing of the output's size is allocated.
     *
     * @param input  {@code [n, in]}, of the layer's data type; not modified
     * @param output {@code [n, out]}, c-order, contiguous, of the layer's data type, sharing no memory with the input,
     *               {@code W}, the bias or any {@code A} or {@code B}; overwritten, owned by the caller (one thread)
     * @return {@code output}
     * @throws IllegalStateException    in training mode (training keeps a cache for backward: use {@link #forward(INDArray)})
     * @throws IllegalArgumentException for a wrong shape, order or data type of either array, or an overlap
     */
    public INDArray forwardInto(INDArray input, INDArray output) {
        Checks.checkInput(input, dataType, in);
        Checks.checkOutput(input, output, out, dataType);
        return lock.shared(() -> {
            Checks.refuseIf(training, "forwardInto is for inference; call eval() first, or use forward(input) in training mode");
            Checks.checkNoOverlaps(output, input, weight, bias, adapters.all());
            if (input.rows() == 0) {
                return output;
            }
            LoraAdapter adapter = pathAdapter();
            LoraPath.Scratch scratch = adapter == null ? null : cache.take();
            cache.keep(false, adaptedProduct(adapter, input, output, false, scratch), scratch, null, null);
            return output;
        });
    }

    /**
     * A batch whose rows use different adapters (PEFT's {@code adapter_names}; many tenants' adapters over one base):
     * row {@code i} of {@code [n, in]} (leading dimensions folded) uses adapter {@code adapterPerRow[i]}, or the base
     * layer where the entry is null or {@link #BASE_MODEL}. Adapters of different ranks mix freely. One base gemm
     * serves the batch; a cost model then adds the rows' LoRA paths per run of rows sharing an adapter (straight on the
     * adapters' own buffers, no copies: the cost follows the rows, not the number of distinct adapters), per adapter
     * over rows gathered by adapter, or with all used adapters stacked (see {@code docs/many-adapters.md}). A batch
     * that uses a single adapter gives bitwise what {@link #forward(INDArray)} gives with it active; with adapters
     * disabled, the base output.
     *
     * <p>In training mode each adapter runs its ordinary path (dropout from its own stream) over its own rows, and
     * {@link #backward} adds each adapter's gradients from its own rows only: exactly what training each adapter alone
     * on its rows gives. {@link #adaptersWithGradients()} then names them, and {@code LoraTrainer} steps each. The
     * input is referenced until {@link #backward}, as for {@link #forward(INDArray)}.
     *
     * @param input         {@code [n, in]} or {@code [..., in]}, of the layer's data type; not modified
     * @param adapterPerRow one name per row (of the folded {@code [n, in]}); not modified
     * @return a new array {@code [n, out]} (or {@code [..., out]})
     * @throws IllegalStateException    while an adapter is merged
     * @throws IllegalArgumentException for a wrong length, an unknown name, or a bad input; nothing is changed then
     */
    public INDArray forward(INDArray input, String[] adapterPerRow) {
        Checks.checkInput(input, dataType, in);
        Objects.requireNonNull(adapterPerRow, "adapterPerRow must not be null");
        String[] names = adapterPerRow.clone();
        return lock.shared(() -> {
            merge.refuseWhileMerged("a mixed-adapter batch");
            Checks.refuseDoraRows(names, adapters);
            if (training) {
                MixedBatch.Trained t = mixedBatch.train(input, names, adapters, this::baseProduct, out);
                if (t.output().length() == 0) {
                    cache.drop();    // as forward(x): no backward may follow an empty batch
                } else {
                    cache.keepMixed(t, input.shape(), t.output().shape());
                }
                return t.output();
            }
            LoraPath.Scratch scratch = cache.take();
            INDArray y = mixedBatch.forward(input, names, adapters, this::baseProduct, scratch, out);
            cache.give(scratch);
            return y;
        });
    }

    /**
     * {@link #backward(INDArray, boolean) backward(gradOutput, true)}, which names its refusals.
     *
     * @param gradOutput same shape and data type as the last training forward's output
     * @return {@code dL/dx}, a new array shaped like that forward's input
     */
    public INDArray backward(INDArray gradOutput) {
        return backward(gradOutput, true);
    }

    /**
     * Back-propagates {@code gradOutput = dL/dy} through the last training-mode {@link #forward}: adds {@code dL/dA},
     * {@code dL/dB} into the active adapter's gradients (after a {@link #forward(INDArray, String[]) mixed batch}:
     * into each used adapter's, from its own rows only) and returns {@code dL/dx}; {@code W} gets no gradient.
     * Consumes the forward cache: each forward supports one backward.
     *
     * <p>Pass {@code inputGradient = false} where the input needs no gradient (the first adapted layer, fed by data):
     * it skips {@code dL/dx = g W + s·gB A}, one gemm of W's size per step, as PyTorch does.
     *
     * @param gradOutput    same shape and data type as that forward's output
     * @param inputGradient whether to compute and return {@code dL/dx}
     * @return {@code dL/dx}, shaped like that forward's input; null when {@code inputGradient} is false
     * @throws IllegalStateException    when merged, or without a training-mode forward since the last state change
     * @throws IllegalArgumentException for a wrong shape or data type
     */
    public INDArray backward(INDArray gradOutput, boolean inputGradient) {
        Objects.requireNonNull(gradOutput, "gradOutput must not be null");
        return lock.exclusiveGet(() -> {
            merge.refuseWhileMerged("backward (the adapter's parameters would not see the gradient)");
            TrainingCache.Forward c = cache.require();
            Checks.checkGradOutput(gradOutput, c.outputShape(), dataType);
            INDArray g = Kernels.fold(gradOutput, out);
            if (c.mixed() != null) {
                INDArray dx = c.mixed().backward(g, inputGradient ? this::inputGradientBase : null, in);
                cache.gradientsAdded(c.mixed().adapters());
                cache.drop();
                return dx == null || Arrays.equals(dx.shape(), c.inputShape()) ? dx : dx.reshape('c', c.inputShape());
            }
            INDArray dx = inputGradient ? Nd4j.createUninitialized(dataType, g.rows(), in) : null;
            if (dx != null) {
                INDArray gw = c.path() == null ? g : c.path().gradientThroughW(g);   // g (DoRA: g ⊙ m/‖W+sBA‖)
                inputGradientBase(gw, dx);                                                          // dx = g W   [n, in]
            }
            if (c.path() != null) {
                c.path().backward(g, dx);    // gB = g B; dB += s g^T u; dA += s gB^T x; dx += s gB A
                cache.gradientsAdded(List.of(c.path().adapter()));
            }
            cache.drop();
            return dx == null || Arrays.equals(dx.shape(), c.inputShape()) ? dx : dx.reshape('c', c.inputShape());
        });
    }

    /** Clears the accumulated gradients of every adapter. */
    public void zeroGrad() {
        lock.exclusive(() -> {
            for (LoraAdapter a : adapters.all()) {
                zeroGradients(a);
            }
            cache.allGradientsCleared();
        });
    }

    /**
     * Clears the accumulated gradients of adapter {@code name} only (an optimizer step does this for each adapter
     * it stepped); it then no longer counts among {@link #adaptersWithGradients()}.
     *
     * @param name an adapter of this layer
     * @throws IllegalArgumentException for an unknown name
     */
    public void zeroGrad(String name) {
        lock.exclusive(() -> {
            LoraAdapter a = adapters.require(name);
            zeroGradients(a);
            cache.gradientsCleared(a);
        });
    }

    /**
     * The adapters whose accumulated gradients an optimizer step applies ({@code LoraTrainer.step()} steps exactly
     * these): every adapter a {@link #backward} gave gradients since they were last cleared ({@link #zeroGrad()},
     * {@link #zeroGrad(String)}, deletion): after {@link #forward(INDArray)} the active adapter, after a
     * {@link #forward(INDArray, String[]) mixed batch} every adapter that had rows in it, and none after a batch of
     * base rows only. While no backward has run since the gradients were last cleared, the effective adapter (the
     * active one, with adapters enabled), whose gradients may have been set by hand.
     *
     * @return their names, in the order the adapters were added to the layer (a new list)
     */
    public List<String> adaptersWithGradients() {
        return lock.shared(() -> {
            List<String> names = new ArrayList<>();
            for (LoraAdapter a : adapters.all()) {
                if (cache.hasGradients(a)) {
                    names.add(a.name());
                }
            }
            LoraAdapter effective = adapters.effective();
            if (!cache.backwardRan() && effective != null) {
                names.add(effective.name());
            }
            return names;
        });
    }

    /** Zeros {@code a}'s gradient buffers that exist (DoRA: its magnitude's too). */
    private static void zeroGradients(LoraAdapter a) {
        if (a.hasGradientBuffers()) {
            Kernels.zero(a.gradA(), a.gradB());
        }
        if (a.isDora()) {
            Kernels.zero(a.gradMagnitude());
        }
    }

    /**
     * Runs {@code update} on the active adapter under the layer's exclusive lock: the way an optimizer changes
     * {@code A} and {@code B} in place. Does nothing when no adapter is active or adapters are disabled.
     *
     * @param update changes the adapter's {@code A} and {@code B} in place; runs on the calling thread
     * @throws IllegalStateException while merged: changing A or B then would make the next unmerge wrong
     */
    public void updateTrainable(Consumer<LoraAdapter> update) {
        lock.exclusive(() -> adapters.update(update, merge, cache));
    }

    /**
     * Runs {@code update} on adapter {@code name}, active or not, under the layer's exclusive lock: the way an
     * optimizer steps each adapter trained in a {@link #forward(INDArray, String[]) mixed batch}. A pending training
     * forward that ran this adapter is dropped.
     *
     * @param name   an adapter of this layer
     * @param update changes the adapter's {@code A} and {@code B} in place; runs on the calling thread
     * @throws IllegalArgumentException for an unknown name
     * @throws IllegalStateException    while an adapter is merged
     */
    public void updateTrainable(String name, Consumer<LoraAdapter> update) {
        Objects.requireNonNull(update, "update must not be null");
        lock.exclusive(() -> adapters.update(name, update, merge, cache));
    }

    /** {@link #merge(MergeMode) Merges} the active adapter the {@link MergeMode#EXACT exact} way (refusals as there). */
    public void merge() {
        merge(MergeMode.EXACT);
    }

    /**
     * Folds the active adapter into {@code W} in place: {@code W += s·B·A} ({@code W^T += ...} for
     * {@link WeightLayout#IN_OUT}). Afterwards forward costs one gemm; backward and training are refused until
     * {@link #unmerge()}. No {@code [out, in]} temporary is allocated; a pending training forward is dropped. FAST
     * becomes EXACT (see {@link #mergeMode()}) when it could overflow or W is a view no gemm can write in place.
     *
     * <p>While merged the layer holds {@code W}'s memory: another layer whose weight shares memory with it (a second
     * {@code LoraLinear} over the same array, or over an overlapping view) cannot merge until this one unmerges, since
     * the two unmerges would otherwise corrupt {@code W}. Memory counts as shared when the address ranges from first to
     * last element overlap (so interleaved views count; disjoint row blocks do not).
     *
     * @param mode {@link MergeMode#EXACT} (unmerge restores {@code W} bit for bit) or {@link MergeMode#FAST}
     * @throws IllegalStateException if an adapter is already merged, no adapter is active, adapters are
     *                               disabled, another layer has an adapter merged into memory {@code W} shares, or
     *                               the result would not be finite; {@code W} is then unchanged
     */
    public void merge(MergeMode mode) {
        Objects.requireNonNull(mode, "mode must not be null");
        lock.exclusive(() -> merge.mergeEffective(weight, layout, maxAbsWeight, adapters, mode, cache, holder()));
    }

    /**
     * PEFT's {@code merge_and_unload} for this layer: merges the effective adapter ({@link MergeMode#EXACT}) unless one
     * is merged already, then keeps the update in {@code W} for good and deletes every adapter. The layer is then the
     * plain {@code y = x W^T + b} over the merged {@code W}, as {@link #base} over it would be; new adapters may be
     * added and merged on top. Nothing is merged with no active adapter or adapters disabled ({@code W} is then
     * unchanged). While merged, a layer holds {@code W}'s memory and no other layer may merge into it (see
     * {@link #merge(MergeMode)}); this gives it back without an unmerge.
     *
     * @throws IllegalStateException as {@link #merge(MergeMode)}, if the merge is refused; the layer and {@code W} are
     *                               then unchanged
     */
    public void mergeAndUnload() {
        lock.exclusive(() -> {
            if (merge.current() == null && adapters.effective() != null) {
                merge.mergeEffective(weight, layout, maxAbsWeight, adapters, MergeMode.EXACT, cache, holder());
            }
            merge.forget();
            adapters.clear();
            cache.drop();
            maxAbsWeight = Checks.maxAbsOrNaN(weight);
        });
    }

    /** How another layer's refused merge names this one. */
    private String holder() {
        return "a LoraLinear [out " + out + ", in " + in + "]";
    }

    /**
     * Takes the merged adapter out of {@code W} again: bitwise what it was after an {@link MergeMode#EXACT} merge, to
     * an ulp of the merged values after a {@link MergeMode#FAST} one. A training forward taken while merged is dropped.
     *
     * @throws IllegalStateException if nothing is merged
     */
    public void unmerge() {
        lock.exclusive(() -> merge.unmergeCurrent(weight, layout, cache));
    }

    /** @return whether an adapter is merged into {@code W} */
    public boolean isMerged() {
        return lock.shared(() -> merge.current() != null);
    }

    /** @return the mode of the current merge, or null when not merged */
    public MergeMode mergeMode() {
        return lock.shared(() -> merge.current() == null ? null : merge.current().mode());
    }

    /**
     * @return bytes the current exact merge keeps for a bit-exact unmerge (the remembered elements and its copy of A
     *         and B); else 0
     */
    public long exactMergeBytes() {
        return lock.shared(merge::exactBytes);
    }

    /**
     * @return a new array {@code W + s·B·A} of the active adapter (PEFT's merge-and-unload), in {@code W}'s layout,
     *         without touching the layer; a copy of {@code W} with no active adapter, adapters disabled, or the
     *         adapter already merged. It equals bit for bit what {@link #merge() merge()} (EXACT) writes into W.
     * @throws IllegalStateException if an element of {@code W + s·B·A} would be NaN or infinite (named in the message)
     */
    public INDArray mergedWeight() {
        return lock.shared(() -> Merge.mergedWeight(weight, layout, pathAdapter()));
    }

    /**
     * The layer kind.
     *
     * @return {@link LoraModule.Kind#LINEAR}
     */
    @Override
    public LoraModule.Kind kind() {
        return LoraModule.Kind.LINEAR;
    }

    @Override
    public String toString() {
        return lock.shared(() -> "LoraLinear{in=" + in + ", out=" + out + ", dataType=" + dataType + ", layout=" + layout
                + ", bias=" + (bias != null) + ", adapters=" + adapters.names() + ", active=" + adapters.active()
                + ", enabled=" + adapters.enabled() + ", merged=" + merge.describe() + ", training=" + training + "}");
    }

    /** y = x W^T (+ b), written into y. */
    private void baseProduct(INDArray x, INDArray y) {
        Kernels.linear(x, weight, layout == WeightLayout.OUT_IN, bias, y);
    }

    /** dx = g W, written into dx. */
    private void inputGradientBase(INDArray g, INDArray dx) {
        Kernels.gemm(g, weight, dx, false, layout == WeightLayout.IN_OUT, 1.0, 0.0);
    }

    /** The base product and {@code adapter}'s path (none for null) into {@code y}; what backward needs, or null. */
    private LoraPath adaptedProduct(LoraAdapter adapter, INDArray x, INDArray y, boolean train, LoraPath.Scratch scratch) {
        if (adapter != null && adapter.isDora()) {
            return DoraPath.forward(adapter, x, y, weight, layout, bias, train, scratch);  // y = c⊙(x Wᵀ + s·x Aᵀ Bᵀ) + b
        }
        baseProduct(x, y);                                                          // y = x W^T + b       [n, out]
        return adapter == null ? null
                : LoraPath.forward(adapter, x, y, train, scratch);                  // y += s·(dropout(x) A^T) B^T
    }

    /** The adapter whose path forward adds: the effective adapter, unless its update is already inside W. */
    private LoraAdapter pathAdapter() {
        return merge.current() == null ? adapters.effective() : null;
    }
}
