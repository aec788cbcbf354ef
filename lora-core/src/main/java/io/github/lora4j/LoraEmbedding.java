package io.github.lora4j;

import java.util.Arrays;
import java.util.List;
import java.util.Objects;
import java.util.SplittableRandom;
import java.util.TreeMap;
import java.util.concurrent.locks.ReentrantReadWriteLock;
import java.util.function.Consumer;
import java.util.function.Supplier;
import org.nd4j.linalg.api.buffer.DataType;
import org.nd4j.linalg.api.ndarray.INDArray;
import org.nd4j.linalg.factory.Nd4j;

/**
 * An embedding table with a frozen weight and LoRA adapters, as PEFT's {@code lora.Embedding}: for token ids
 * {@code x}, {@code y = T[x] + s·(A^T[x]) B^T}, with the table {@code T [num_embeddings, dim]},
 * {@code A [r, num_embeddings]} and {@code B [dim, r]} (PEFT's {@code lora_embedding_A} / {@code lora_embedding_B})
 * and {@code s} the adapter's {@link LoraConfig#scaling() scaling}. Row {@code i} of the update
 * {@code ΔT = s·(B A)^T} is what token {@code i} gains.
 *
 * <pre>{@code
 * LoraEmbedding emb = LoraEmbedding.wrap(table, LoraConfig.builder().rank(8).alpha(16).build());
 * INDArray y = emb.forward(new int[] {5, 17, 5});   // [3, dim]
 * emb.train(); emb.forward(ids); emb.backward(dLdy); // fills adapter("default").gradA() / gradB()
 * emb.merge();                                       // T += s·(B A)^T, exactly undone by unmerge()
 * }</pre>
 *
 * <h2>Init (PEFT's)</h2>
 * With {@link LoraInit#KAIMING_UNIFORM} or {@link LoraInit#GAUSSIAN}: {@code A = 0} and {@code B ~ N(0, 1)}
 * (PEFT's embedding convention, the reverse of a linear layer's, so a fresh adapter changes nothing and still
 * gets a gradient); with {@link LoraInit#ZERO} both are zero. Draws are deterministic from the config's seed.
 * Dropout is not applied to an embedding's LoRA path (PEFT does not either); the config's dropout is ignored.
 *
 * <h2>Who may change what</h2>
 * The table is referenced, not copied; only {@link #merge()} and {@link #unmerge()} write it (in place, the
 * {@link MergeMode#EXACT exact} way by default, so unmerge restores it bit for bit). {@code A} and {@code B} change
 * through {@link #setAdapterWeights} and {@link #updateTrainable}, both refused while merged. The merge machinery is
 * a {@link LoraLinear} over the table in {@link WeightLayout#IN_OUT} layout ({@code in = num_embeddings},
 * {@code out = dim}), whose {@code W += s·(B A)^T} is exactly the embedding's update.
 *
 * <h2>Threading</h2>
 * Eval-mode {@link #forward} runs under a shared lock, everything that changes state under an exclusive one, so a
 * forward never sees a half-merged table. Training ({@code forward} then {@link #backward}) belongs on one thread.
 */
public final class LoraEmbedding implements LoraTrainable {

    /**
     * The embedding's gemms pass the {@link Kernels} seam on its ND4J route ({@code false}: not the direct one). The
     * direct route takes one-or-two-row products through gemv, whose FLOAT rounding differs by an ulp from gemm's,
     * so a lookup of one id would no longer be bitwise the same id inside a batch, and results would move by an ulp
     * against earlier releases; the embedding's products are thin ({@code r} columns), where the route gains little.
     */
    private static final boolean EMBEDDING_ROUTE = false;

    private final INDArray table;
    private final LoraLinear delegate;
    private final ReentrantReadWriteLock lock = new ReentrantReadWriteLock();
    private volatile boolean training;
    /** ids and u = A^T[ids] [n, r] of the last training forward, with the adapter they were computed for. */
    private Cache cache;

    private record Cache(String adapter, long[] ids, INDArray u, long[] outShape) {
    }

    private LoraEmbedding(INDArray table) {
        this.table = table;
        LoraLinear d;
        try {
            d = LoraLinear.base(table, null, WeightLayout.IN_OUT);
        } catch (IllegalArgumentException e) {
            throw new IllegalArgumentException("embedding table [num_embeddings, dim]: " + e.getMessage(), e);
        }
        this.delegate = d;
    }

    /**
     * Wraps a table {@code [num_embeddings, dim]} and adds adapter {@value LoraLinear#DEFAULT_ADAPTER} (active).
     *
     * @param table  {@code [num_embeddings, dim]}, FLOAT or DOUBLE, finite; referenced, not copied
     * @param config the adapter's configuration; any {@code r >= 1} (above {@code min(num_embeddings, dim)} too, as in PEFT)
     * @return a new layer in eval mode whose active adapter {@value LoraLinear#DEFAULT_ADAPTER} is initialised as
     *         the class comment says (so its output is the plain lookup until {@code A} is trained)
     * @throws NullPointerException     if {@code table} or {@code config} is null
     * @throws IllegalArgumentException if the table is not a non-empty FLOAT or DOUBLE matrix of finite values, the
     *                                  rank is below 1, or the scaling is not a finite
     *                                  value of the table's type; the message names expected and actual
     */
    public static LoraEmbedding wrap(INDArray table, LoraConfig config) {
        LoraEmbedding e = base(table);
        e.addAdapter(LoraLinear.DEFAULT_ADAPTER, config);
        e.setActiveAdapter(LoraLinear.DEFAULT_ADAPTER);
        return e;
    }

    /**
     * Wraps a table {@code [num_embeddings, dim]} without adapters: the output is the plain lookup until one is added
     * and activated (for instance when adapters are loaded from files).
     *
     * @param table {@code [num_embeddings, dim]}, FLOAT or DOUBLE, finite; referenced, not copied
     * @return a new layer in eval mode with no adapter
     * @throws NullPointerException     if {@code table} is null
     * @throws IllegalArgumentException if the table is not a non-empty FLOAT or DOUBLE matrix of finite values
     */
    public static LoraEmbedding base(INDArray table) {
        Objects.requireNonNull(table, "table must not be null");
        return new LoraEmbedding(table);
    }

    // ---------------------------------------------------------------- shapes

    /**
     * Rows of the table: the vocabulary size.
     *
     * @return {@code num_embeddings}; valid ids are {@code [0, num_embeddings)}
     */
    public long numEmbeddings() {
        return delegate.inFeatures();
    }

    /**
     * Columns of the table: the width of one embedding.
     *
     * @return {@code dim}, the last dimension of every {@link #forward} result
     */
    public long embeddingDim() {
        return delegate.outFeatures();
    }

    /**
     * The table's data type, and so the type of every result and of the arrays the layer accepts.
     *
     * @return FLOAT or DOUBLE
     */
    public DataType dataType() {
        return delegate.dataType();
    }

    /**
     * The live table (merged adapters included); do not modify it.
     *
     * @return the very array given to {@link #wrap} or {@link #base}, {@code [num_embeddings, dim]}: not a copy, so
     *         it changes on {@link #merge()} and {@link #unmerge()}
     */
    public INDArray table() {
        return table;
    }

    /**
     * Parameters that training updates.
     *
     * @return {@code r·(num_embeddings + dim)} of the active adapter, or 0 when none is active
     */
    public long trainableParameterCount() {
        return shared(delegate::trainableParameterCount);
    }

    /**
     * All parameters of the layer.
     *
     * @return {@code num_embeddings·dim} plus every adapter's {@code r·(num_embeddings + dim)}, active or not
     */
    public long totalParameterCount() {
        return shared(delegate::totalParameterCount);
    }

    // ---------------------------------------------------------------- adapters

    /**
     * Adds an adapter, initialised as PEFT does for embeddings (see the class comment); the active adapter does not
     * change. All or nothing: when the add fails (a refused argument, or a failure while drawing or installing
     * {@code B}), the layer is as it was, a pending training forward included.
     *
     * @param name   the new adapter's name: not blank, not {@value LoraLinear#BASE_MODEL}, not already used
     * @param config its configuration, kept as given ({@link LoraAdapter#config()}); its dropout is ignored
     * @throws NullPointerException     if {@code name} or {@code config} is null
     * @throws IllegalArgumentException if the name is blank, reserved or taken, the rank is below
     *                                  1, the scaling is not a finite value of the
     *                                  table's type, or the config asks for DoRA (not supported on embeddings)
     */
    public void addAdapter(String name, LoraConfig config) {
        addAdapter(name, config, LoraEmbedding::standardNormal);
    }

    /** The draw of PEFT's {@code B ~ N(0, 1)}: {@code (type, seed, rows, cols) -> [rows, cols]}; a seam for tests. */
    interface NormalDraw {
        INDArray draw(DataType type, long seed, long rows, long cols);
    }

    void addAdapter(String name, LoraConfig config, NormalDraw normal) {
        Objects.requireNonNull(config, "config must not be null");
        change(() -> {
            // All-or-nothing: check and draw PEFT's weights before the layer changes, so a refused config or a failed
            // draw leaves it as it was; once added, only the weight check can still fail, and that removes the adapter.
            Checks.checkNewAdapter(name, config, numEmbeddings(), embeddingDim(), dataType());
            Dora.refuseOn("LoraEmbedding", config);
            INDArray a = null;
            INDArray b = null;
            if (config.init() != LoraInit.ZERO) {
                b = normal.draw(dataType(), config.seed(), embeddingDim(), config.rank());
                a = Nd4j.zeros(dataType(), config.rank(), numEmbeddings());
            }
            // The adapter keeps the caller's config (init included); the linear draw is then replaced by PEFT's.
            delegate.addAdapter(name, config);
            if (b != null) {
                try {
                    delegate.setAdapterWeights(name, a, b);
                } catch (RuntimeException | Error e) {
                    delegate.deleteAdapter(name); // cannot fail: it exists, is not merged, is not active
                    throw e;
                }
            }
        });
    }

    /** {@code N(0, 1)} values from {@code seed}, by Box–Muller on a {@link SplittableRandom}: the same on any backend. */
    private static INDArray standardNormal(DataType type, long seed, long rows, long cols) {
        SplittableRandom rng = new SplittableRandom(seed);
        double[] v = new double[Math.toIntExact(rows * cols)];
        for (int i = 0; i < v.length; i += 2) {
            double u1 = 1.0 - rng.nextDouble(); // (0, 1]
            double u2 = rng.nextDouble();
            double radius = Math.sqrt(-2 * Math.log(u1));
            v[i] = radius * Math.cos(2 * Math.PI * u2);
            if (i + 1 < v.length) {
                v[i + 1] = radius * Math.sin(2 * Math.PI * u2);
            }
        }
        return Nd4j.createFromArray(v).reshape('c', rows, cols).castTo(type);
    }

    /**
     * Makes {@code name} the adapter used by forward, backward and merge; a pending training forward is dropped.
     *
     * @param name an existing adapter
     * @throws NullPointerException     if {@code name} is null
     * @throws IllegalArgumentException for an unknown name
     * @throws IllegalStateException    while another adapter is merged into the table
     */
    public void setActiveAdapter(String name) {
        change(() -> delegate.setActiveAdapter(name));
    }

    /**
     * The adapter forward, backward and merge use.
     *
     * @return its name, or null when none is active (the output is then the plain lookup)
     */
    public String activeAdapter() {
        return shared(delegate::activeAdapter);
    }

    /**
     * Adapter names, in the order they were added.
     *
     * @return an unmodifiable snapshot: later adds and deletes do not show in it
     */
    public List<String> adapterNames() {
        return shared(delegate::adapterNames);
    }

    /**
     * Adapter {@code name}; modify its arrays only through {@link #updateTrainable} or {@link #setAdapterWeights}.
     *
     * @param name an existing adapter
     * @return the adapter itself, whose {@code A [r, num_embeddings]}, {@code B [dim, r]} and gradients are the live
     *         arrays, not copies
     * @throws NullPointerException     if {@code name} is null
     * @throws IllegalArgumentException for an unknown name
     */
    public LoraAdapter adapter(String name) {
        return shared(() -> delegate.adapter(name));
    }

    /**
     * Removes an adapter; deleting the active one leaves none active (the plain lookup), not silently another.
     *
     * @param name an existing adapter
     * @throws NullPointerException     if {@code name} is null
     * @throws IllegalArgumentException for an unknown name
     * @throws IllegalStateException    if that adapter is merged into the table
     */
    public void deleteAdapter(String name) {
        change(() -> delegate.deleteAdapter(name));
    }

    /**
     * Copies {@code a} and {@code b} into adapter {@code name}'s live arrays; both are checked before either is
     * written, so a refused pair changes nothing. A pending training forward is dropped.
     *
     * @param name an existing adapter
     * @param a    {@code [r, num_embeddings]} of the table's type, finite; copied, not referenced
     * @param b    {@code [dim, r]} of the table's type, finite; copied, not referenced
     * @throws NullPointerException     if an argument is null
     * @throws IllegalArgumentException for an unknown name, a wrong shape or data type, or a non-finite value
     * @throws IllegalStateException    if that adapter is merged into the table
     */
    public void setAdapterWeights(String name, INDArray a, INDArray b) {
        change(() -> delegate.setAdapterWeights(name, a, b));
    }

    /**
     * Lets {@code update} change the active adapter's {@code A} and {@code B} in place (an optimizer step), under the
     * layer's exclusive lock. Does nothing (and does not call {@code update}) when no adapter is active or adapters
     * are disabled. A pending training forward is dropped.
     *
     * @param update receives the active adapter; it may write {@code a()} and {@code b()} in place
     * @throws NullPointerException  if {@code update} is null
     * @throws IllegalStateException while an adapter is merged: changing A or B then would make the next unmerge wrong
     */
    public void updateTrainable(Consumer<LoraAdapter> update) {
        change(() -> delegate.updateTrainable(update));
    }

    /**
     * Lets {@code update} change adapter {@code name}'s {@code A} and {@code B} in place (an optimizer step), active
     * or not, under the layer's exclusive lock. A pending training forward is dropped.
     *
     * @param name   an adapter of this layer
     * @param update receives that adapter; it may write {@code a()} and {@code b()} in place
     * @throws NullPointerException     if {@code update} is null
     * @throws IllegalArgumentException for an unknown name
     * @throws IllegalStateException    while an adapter is merged into the table
     */
    public void updateTrainable(String name, Consumer<LoraAdapter> update) {
        change(() -> delegate.updateTrainable(name, update));
    }

    /**
     * Sets the run-time scale of adapter {@code name}: {@code s' = scale·alpha / r} ({@code / sqrt(r)} with rsLoRA),
     * bitwise the scaling of an adapter made with {@code alpha·scale}; see {@link LoraLinear#setAdapterScale}. The
     * config is unchanged; a pending training forward is dropped.
     *
     * @param name  an existing adapter
     * @param scale any finite value; 1 restores the config's scaling exactly, 0 turns the adapter off
     * @throws NullPointerException     if {@code name} is null
     * @throws IllegalArgumentException for an unknown name, or a scale that is not finite or gives an {@code s'} that
     *                                  is not a finite value of the table's type
     * @throws IllegalStateException    while that adapter is merged into the table (unmerge first)
     */
    public void setAdapterScale(String name, double scale) {
        change(() -> delegate.setAdapterScale(name, scale));
    }

    /**
     * Turns adapters off: {@link #forward} is then the plain lookup; a pending training forward is dropped.
     *
     * @throws IllegalStateException while an adapter is merged (its update is inside the table)
     */
    public void disableAdapters() {
        change(() -> delegate.disableAdapters());
    }

    /** Turns adapters back on after {@link #disableAdapters()}; a pending training forward is dropped. */
    public void enableAdapters() {
        change(() -> delegate.enableAdapters());
    }

    /**
     * Whether adapters take part in the forward pass.
     *
     * @return false after {@link #disableAdapters()}, until {@link #enableAdapters()}
     */
    public boolean adaptersEnabled() {
        return delegate.adaptersEnabled();
    }

    // ---------------------------------------------------------------- modes

    /**
     * Training mode: {@link #forward} keeps what {@link #backward} needs (and runs under the exclusive lock).
     *
     * @return this layer
     */
    public LoraEmbedding train() {
        training = true;
        return this;
    }

    /**
     * Evaluation mode (the initial mode): nothing cached, and a pending training forward is dropped.
     *
     * @return this layer
     */
    public LoraEmbedding eval() {
        training = false;
        change(() -> { });
        return this;
    }

    /**
     * Whether in training mode.
     *
     * @return true after {@link #train()}, until {@link #eval()}
     */
    public boolean isTraining() {
        return training;
    }

    // ---------------------------------------------------------------- forward and backward

    /**
     * Looks up {@code ids}: {@code y[i] = T[ids[i]] + s·A[:, ids[i]]^T B^T} with the active adapter: the plain lookup
     * with none active or adapters disabled, and the lookup of the merged table while merged. In training mode the ids (copied) and
     * {@code u = A^T[ids]} are kept for {@link #backward}.
     *
     * @param ids token ids, each in {@code [0, num_embeddings)}; repeats allowed, empty allowed; not modified
     * @return a new array {@code [ids.length, dim]} of the table's type, sharing no memory with the table
     * @throws NullPointerException     if {@code ids} is null
     * @throws IllegalArgumentException for an id outside {@code [0, num_embeddings)}, naming it and its index
     */
    public INDArray forward(long... ids) {
        Objects.requireNonNull(ids, "ids must not be null");
        return forward(ids.clone(), new long[] {ids.length, embeddingDim()});
    }

    /**
     * Looks up integer-valued {@code ids} of any shape {@code [...]} as {@link #forward(long...)} does, element by
     * element in c order.
     *
     * @param ids an integer array, or a floating one holding whole numbers, of any shape and order; not modified
     * @return a new array {@code [..., dim]} (the ids' shape plus {@code dim}) of the table's type
     * @throws NullPointerException     if {@code ids} is null
     * @throws IllegalArgumentException for ids of a non-numeric type (BOOL, UTF8), or a non-integral (or NaN) or
     *                                  out-of-range id, naming it and its flat index
     */
    public INDArray forward(INDArray ids) {
        Objects.requireNonNull(ids, "ids must not be null");
        if (!ids.dataType().isNumerical()) {
            // BOOL would read as ids 0 and 1, UTF8 fails deep inside ND4J
            throw new IllegalArgumentException("ids: expected an integer array (or a floating one holding whole "
                    + "numbers), got " + ids.dataType() + " " + Arrays.toString(ids.shape()));
        }
        double[] v = ids.dup('c').data().asDouble();
        long[] flat = new long[v.length];
        for (int i = 0; i < v.length; i++) {
            if (v[i] != Math.rint(v[i])) {
                throw new IllegalArgumentException("ids must be whole numbers, got " + v[i] + " at flat index " + i);
            }
            flat[i] = (long) v[i];
        }
        long[] shape = Arrays.copyOf(ids.shape(), ids.rank() + 1);
        shape[ids.rank()] = embeddingDim();
        return forward(flat, shape);
    }

    private INDArray forward(long[] ids, long[] outShape) {
        for (int i = 0; i < ids.length; i++) {
            if (ids[i] < 0 || ids[i] >= numEmbeddings()) {
                throw new IllegalArgumentException("ids must be in [0, " + numEmbeddings() + "), got " + ids[i]
                        + " at flat index " + i);
            }
        }
        boolean keep = training;
        Supplier<INDArray> compute = () -> {
            int n = ids.length;
            int[] rows = new int[n];
            for (int i = 0; i < n; i++) {
                rows[i] = Math.toIntExact(ids[i]);
            }
            // y = T[ids] [n, dim]: one gather, a new c-order array
            INDArray y = n == 0 ? Nd4j.create(dataType(), 0, embeddingDim()) : Nd4j.pullRows(table, 1, rows);
            String active = delegate.activeAdapter();
            boolean lora = active != null && delegate.adaptersEnabled() && !delegate.isMerged() && n > 0;
            if (lora) {
                LoraAdapter ad = delegate.adapter(active);
                // u = A^T[ids] [n, r]: the gathered columns of A [r, n], transposed
                INDArray u = Nd4j.pullRows(ad.a(), 0, rows).transpose().dup('c');
                // y += s u B^T   [n, dim]; the ND4J route of the seam (see EMBEDDING_ROUTE)
                Kernels.gemm(EMBEDDING_ROUTE, u, ad.b(), y, false, true, ad.scaling(), 1.0);
                if (keep) {
                    cache = new Cache(active, ids, u, outShape);
                }
            } else if (keep) {
                cache = null;
            }
            return y.reshape('c', outShape);
        };
        return keep ? exclusive(compute) : shared(compute);
    }

    /**
     * Accumulates the gradients of the adapter used by the last training-mode {@link #forward}:
     * {@code dB += s·g^T u} and {@code dA[:, ids[i]] += s·(g B)[i]} with {@code u = A^T[ids]}. Ids get no
     * gradient, so nothing is returned.
     *
     * @param gradOutput {@code dL/dy}, the shape of that forward's result, of the table's type
     * @throws IllegalStateException    without a training forward since the last state change (merge, switch,
     *                                  weight update, eval), or if that forward ran without an active unmerged adapter
     * @throws IllegalArgumentException for a wrong shape or type
     */
    public void backward(INDArray gradOutput) {
        Objects.requireNonNull(gradOutput, "gradOutput must not be null");
        exclusive(() -> {
            Cache c = cache;
            if (c == null) {
                throw new IllegalStateException("no training-mode forward with an active, unmerged adapter since the "
                        + "last state change; call train() and forward(ids) first");
            }
            if (!Arrays.equals(gradOutput.shape(), c.outShape()) || gradOutput.dataType() != dataType()) {
                throw new IllegalArgumentException("gradOutput must be " + Arrays.toString(c.outShape()) + " of "
                        + dataType() + ", got " + Arrays.toString(gradOutput.shape()) + " of " + gradOutput.dataType());
            }
            LoraAdapter ad = delegate.adapter(c.adapter());
            double s = ad.scaling();
            INDArray g = gradOutput.reshape('c', c.ids().length, embeddingDim()).dup('c');
            // dB += s g^T u   [dim, r]
            Kernels.gemm(EMBEDDING_ROUTE, g, c.u(), ad.gradB(), true, false, s, 1.0);
            // gB = g B   [n, r]; dA[:, id] += s gB[i]
            INDArray gB = Nd4j.create(dataType(), c.ids().length, ad.rank());
            Kernels.gemm(EMBEDDING_ROUTE, g, ad.b(), gB, false, false, 1.0, 0.0);
            TreeMap<Long, double[]> perId = new TreeMap<>();
            for (int i = 0; i < c.ids().length; i++) {
                double[] acc = perId.computeIfAbsent(c.ids()[i], k -> new double[ad.rank()]);
                for (int k = 0; k < ad.rank(); k++) {
                    acc[k] += gB.getDouble(i, k);
                }
            }
            INDArray gradA = ad.gradA();
            perId.forEach((id, acc) -> {
                for (int k = 0; k < acc.length; k++) {
                    gradA.putScalar(new long[] {k, id}, gradA.getDouble(k, id) + s * acc[k]);
                }
            });
            return null;
        });
    }

    /** Clears the gradients of every adapter. */
    public void zeroGrad() {
        exclusive(() -> {
            delegate.zeroGrad();
            return null;
        });
    }

    /**
     * Clears the gradients of adapter {@code name} only (an optimizer step does this for each adapter it stepped).
     *
     * @param name an adapter of this layer
     * @throws IllegalArgumentException for an unknown name
     */
    public void zeroGrad(String name) {
        exclusive(() -> {
            delegate.zeroGrad(name);
            return null;
        });
    }

    /**
     * The adapters an optimizer step applies: an embedding trains one adapter per batch, so this is the active
     * adapter while adapters are enabled (an embedding has no mixed-adapter batch), and none otherwise.
     *
     * @return their names (a new list)
     */
    public List<String> adaptersWithGradients() {
        return exclusive(delegate::adaptersWithGradients);
    }

    // ---------------------------------------------------------------- merge

    /**
     * {@link #merge(MergeMode) Merges} the exact way, so that {@link #unmerge()} restores the table bit for bit.
     *
     * @throws IllegalStateException as {@link #merge(MergeMode)} does; the table is then unchanged
     */
    public void merge() {
        merge(MergeMode.EXACT);
    }

    /**
     * {@code T += s·(B A)^T} with the active adapter, in place; see {@link LoraLinear#merge(MergeMode)}. Forward is
     * then the plain lookup of the merged table; backward, training, and changing the merged adapter's weights or
     * scale are refused until {@link #unmerge()}. A pending training forward is dropped.
     *
     * @param mode {@link MergeMode#EXACT} (unmerge restores the table bit for bit) or {@link MergeMode#FAST}
     * @throws NullPointerException  if {@code mode} is null
     * @throws IllegalStateException if an adapter is already merged, none is active, adapters are disabled, or
     *                               {@code A}, {@code B} or the result is not finite; the table is then unchanged
     */
    public void merge(MergeMode mode) {
        change(() -> delegate.merge(mode));
    }

    /**
     * Subtracts the merged update again: after an exact merge the table is bitwise what it was, after a fast one to
     * an ulp of the merged values.
     *
     * @throws IllegalStateException if nothing is merged
     */
    public void unmerge() {
        change(() -> delegate.unmerge());
    }

    /**
     * PEFT's {@code merge_and_unload} for this table: merges the active adapter (exact way) unless one is merged, then
     * keeps the update in the table for good and deletes every adapter; see {@link LoraLinear#mergeAndUnload()}.
     *
     * @throws IllegalStateException as {@link #merge(MergeMode)}, if the merge is refused; nothing is changed then
     */
    public void mergeAndUnload() {
        change(() -> delegate.mergeAndUnload());
    }

    /**
     * Whether an adapter is merged into the table.
     *
     * @return true between a successful {@link #merge()} and {@link #unmerge()}
     */
    public boolean isMerged() {
        return delegate.isMerged();
    }

    /**
     * The table with the active adapter's update, without touching the layer (PEFT's {@code merge_and_unload}).
     *
     * @return a new array {@code [num_embeddings, dim]}, {@code T + s·(B A)^T}; a copy of the table when no adapter
     *         is active, adapters are disabled, or the adapter is already merged (the table then holds the update); bit for bit what an EXACT merge writes
     * @throws IllegalStateException if an element would be NaN or infinite (named in the message)
     */
    public INDArray mergedTable() {
        return shared(delegate::mergedWeight);
    }

    private <T> T shared(Supplier<T> body) {
        lock.readLock().lock();
        try {
            return body.get();
        } finally {
            lock.readLock().unlock();
        }
    }

    private <T> T exclusive(Supplier<T> body) {
        lock.writeLock().lock();
        try {
            return body.get();
        } finally {
            lock.writeLock().unlock();
        }
    }

    /**
     * Every state change that succeeds drops the training cache, so a backward never pairs with a stale forward. The
     * getters that could see a change half done (an added adapter before PEFT's weights are in) read under the
     * shared lock.
     */
    private void change(Runnable body) {
        exclusive(() -> {
            body.run();
            cache = null;
            return null;
        });
    }

    /**
     * The layer kind.
     *
     * @return {@link LoraModule.Kind#EMBEDDING}
     */
    @Override
    public LoraModule.Kind kind() {
        return LoraModule.Kind.EMBEDDING;
    }

    @Override
    public String toString() {
        return "LoraEmbedding{" + numEmbeddings() + "x" + embeddingDim() + ", " + dataType() + ", adapters="
                + adapterNames() + ", active=" + activeAdapter() + ", merged=" + isMerged() + "}";
    }
}
