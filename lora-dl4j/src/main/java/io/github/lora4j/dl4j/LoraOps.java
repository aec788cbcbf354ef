package io.github.lora4j.dl4j;

import static io.github.lora4j.dl4j.LoraParamInitializer.BIAS_KEY;
import static io.github.lora4j.dl4j.LoraParamInitializer.LORA_A_KEY;
import static io.github.lora4j.dl4j.LoraParamInitializer.LORA_B_KEY;
import static io.github.lora4j.dl4j.LoraParamInitializer.MAGNITUDE_KEY;
import static io.github.lora4j.dl4j.LoraParamInitializer.WEIGHT_KEY;

import io.github.lora4j.DoraNorms;
import io.github.lora4j.DropoutStream;
import io.github.lora4j.LoraConfig;
import io.github.lora4j.LoraInit;
import io.github.lora4j.LoraLinear;
import io.github.lora4j.MergeMode;
import io.github.lora4j.WeightLayout;
import java.util.Arrays;
import java.util.Map;
import org.deeplearning4j.exception.DL4JInvalidInputException;
import org.deeplearning4j.nn.conf.layers.Layer;
import org.deeplearning4j.nn.gradient.DefaultGradient;
import org.deeplearning4j.nn.gradient.Gradient;
import org.deeplearning4j.nn.workspace.ArrayType;
import org.deeplearning4j.nn.workspace.LayerWorkspaceMgr;
import org.nd4j.common.primitives.Pair;
import org.nd4j.linalg.api.buffer.DataType;
import org.nd4j.linalg.api.memory.MemoryWorkspace;
import org.nd4j.linalg.api.ndarray.INDArray;
import org.nd4j.linalg.factory.Nd4j;

/**
 * The one delegate of the LoRA layer classes ({@link LoraDenseLayerImpl}, {@link LoraOutputLayerImpl},
 * {@link LoraRnnOutputLayerImpl}): their arithmetic, their LoRA dropout and their merge state. DL4J's class hierarchy
 * makes the three extend different DL4J classes, whose input, parameters and masks are protected; each passes them in,
 * and keeps only what differs: how its input becomes {@code x [n, nIn]} and how its output gradient is found. With
 * {@code W [nIn, nOut]} (DL4J's layout), {@code A [r, nIn]}, {@code B [nOut, r]}, the dropout mask {@code m} and
 * {@code q = 1/(1 − p)}:
 * <pre>
 *   forward   z = x W + b + s·u Bᵀ,  u = q·(x ⊙ m) Aᵀ [n, r]          (m = 1, q = 1 outside training or for p = 0)
 *   backward  gB = g B [n, r];  dB = s·gᵀ u;  dA = s·q·gBᵀ (x ⊙ m);  dx = g Wᵀ + s·q·(gB A) ⊙ m   (no dW, no db)
 * </pre>
 * The base part {@code x W + b} is computed exactly as DL4J's {@code BaseLayer} does (same mmul, same bias add),
 * so with {@code B = 0} the output is DL4J's, bit for bit.
 *
 * <h2>DoRA</h2>
 * With a DoRA adapter ({@code loraMagnitude m [nOut]}), as lora-core's {@code LoraLinear} and PEFT compute it, with
 * {@code c = m / ‖W + s·B·A‖} per output feature (a column of {@code W [nIn, nOut]}; the norm from lora-core's
 * {@link DoraNorms}, a constant in backward): {@code z = c ⊙ (x W + s·(x Aᵀ) Bᵀ) + b}, and in training with dropout
 * {@code z = x W + b + (c − 1) ⊙ (x' W) + c ⊙ s·(x' Aᵀ) Bᵀ}; see {@code doraBackward}.
 *
 * <h2>Dropout on the LoRA input</h2>
 * As PEFT applies it: only the LoRA path sees {@code dropout(x)}, only in training, after the layer's own input
 * dropout. One mask per input: it is drawn ({@link DropoutStream}, from the adapter's configuration for this layer's
 * name, so the masks are those a lora-core {@code LoraLinear} of that configuration draws) by the first training
 * forward after {@link #newInput()}, and every later forward and backward of that input reuses it: DL4J computes a
 * layer's forward twice per step (once to feed the next layer, once again in backprop) and scores the output layer
 * after its backprop, and all three see the same mask. The stream restarts whenever the layer is built
 * ({@code apply}, {@code clone}, restoring a saved network).
 */
final class LoraOps {

    /** One forward: the layer input as used ({@code x}), {@code z}, and what backward needs. */
    record Forward(INDArray x, INDArray z, INDArray u, INDArray xLora, INDArray mask, double q, Dora dora) {
    }

    /**
     * What a DoRA forward adds for backward: the norms {@code ‖W + s·B·A‖} per output feature (double), the factors
     * {@code c = m / norms} and {@code c − 1} ({@code [nOut]}, the network's type) and the bracket {@code c} multiplies
     * ({@code qb [n, nOut]}: {@code x W + s·u Bᵀ}, or {@code x' W + s·u Bᵀ} with dropout); {@code qb} is null outside
     * backprop.
     */
    record Dora(double[] norms, INDArray c, INDArray cMinus1, INDArray qb) {
    }

    private final LoraLayerConf conf;
    private double scaling;
    private double dropout;
    /** Whether the adapter is DoRA ({@code loraMagnitude} among the parameters). */
    private boolean dora;
    /** The mask stream of the layer; null without adapter or dropout. */
    private DropoutStream masks;
    /** The mask of the current input ({@code [n, nIn]}, 0 or 1, the network's data type), or null. */
    private INDArray mask;
    /** The lora-core layer holding the exact-merge record while merged in this process; null otherwise. */
    private LoraLinear mergedHere;

    LoraOps(LoraLayerConf conf) {
        this.conf = conf;
        settingsChanged();
    }

    /**
     * Takes scaling and dropout from the configuration again, after {@link LoraDl4j#loadAdapter} changed its alpha or
     * dropout; the mask stream restarts only when the dropout changes.
     */
    void settingsChanged() {
        LoraConfig c = conf.loraConfig();
        this.scaling = c == null ? 0 : c.scaling();
        double p = c == null ? 0 : c.dropout();
        if (p != dropout || (p > 0 && masks == null)) {
            masks = p > 0 ? DropoutStream.of(c.forModule(LoraParamInitializer.modulePath(((Layer) conf).getLayerName())))
                    : null;
            mask = null;
        }
        this.dropout = p;
        this.dora = c != null && c.useDora();
    }

    boolean hasAdapter() {
        return conf.lora() != null;
    }

    /** Forgets the dropout mask: the layer has a new input (DL4J's {@code setInput}, {@code clear}). */
    void newInput() {
        mask = null;
    }

    /**
     * The mask of the current input, as the last training forward drew it (for tests).
     *
     * @return the {@code [n, nIn]} 0/1 mask, or null
     */
    INDArray currentMask() {
        return mask;
    }

    /**
     * The forward for input {@code x [n, nIn]}: {@code u} is null without adapter or while merged ({@code W} then
     * holds the update). Arrays go to the given workspaces: {@code z} to ACTIVATIONS, the rest to FF or BP working
     * memory ({@code forBackprop}). The caller applies DL4J's mask to {@code z} where its base layer does.
     */
    Forward forward(INDArray input, Map<String, INDArray> params, boolean training, boolean forBackprop,
            LayerWorkspaceMgr mgr, String layerId) {
        return forward(input, params, training, forBackprop, 'c', mgr, layerId);
    }

    /**
     * {@link #forward(INDArray, Map, boolean, boolean, LayerWorkspaceMgr, String)} with {@code z} in the given order:
     * 'c' as DL4J's {@code BaseLayer} makes it, or the order of {@code x.mmul(W)}, which DL4J's
     * {@code RnnOutputLayer.activate} uses ('f' when both are 'f'); the gemm, hence the bits, depend on it.
     */
    Forward forward(INDArray input, Map<String, INDArray> params, boolean training, boolean forBackprop, char zOrder,
            LayerWorkspaceMgr mgr, String layerId) {
        INDArray w = params.get(WEIGHT_KEY);
        if (input.rank() != 2 || input.columns() != w.rows()) {
            throw new DL4JInvalidInputException("expected input [minibatch, " + w.rows() + "] (nIn " + w.rows()
                    + "), got shape " + Arrays.toString(input.shape()) + " " + layerId);
        }
        ArrayType work = forBackprop ? ArrayType.BP_WORKING_MEM : ArrayType.FF_WORKING_MEM;
        INDArray x = input.castTo(w.dataType());
        INDArray z = mgr.createUninitialized(ArrayType.ACTIVATIONS, w.dataType(), new long[] {x.size(0), w.size(1)},
                zOrder);
        if (dora && !conf.merged() && !(training && dropout > 0)) {
            return doraForward(x, z, params, forBackprop, mgr, work);
        }
        x.mmuli(w, z); // as DL4J's BaseLayer.preOutputWithPreNorm, for a bitwise-equal base output
        if (conf.hasBias()) {
            z.addiRowVector(params.get(BIAS_KEY));
        }
        if (!hasAdapter() || conf.merged()) {
            return new Forward(x, z, null, null, null, 1.0, null);
        }
        INDArray xLora = x;
        INDArray m = null;
        double q = 1.0;
        if (training && dropout > 0) {
            m = maskFor(x);
            xLora = mgr.createUninitialized(work, w.dataType(), x.size(0), x.size(1));
            x.mul(m, xLora);                                                          // x ⊙ m
            q = masks.scale();                                                        // 1/(1-p), into alpha
        }
        INDArray a = params.get(LORA_A_KEY);
        INDArray u = mgr.createUninitialized(work, w.dataType(), x.size(0), a.rows());
        Nd4j.gemm(xLora, a, u, false, true, q, 0.0);                               // u = q (x ⊙ m) Aᵀ  [n, r]
        if (dora) {
            // PEFT's DoRA with dropout: z = x W + b + (c − 1) ⊙ (x' W) + c ⊙ s·u Bᵀ,  x' = q (x ⊙ m)
            Dora d = doraFactors(params, w.dataType());
            INDArray t1 = mgr.createUninitialized(work, w.dataType(), x.size(0), w.size(1));
            Nd4j.gemm(xLora, w, t1, false, false, q, 0.0);                          // t1 = x' W          [n, nOut]
            INDArray t2 = mgr.createUninitialized(work, w.dataType(), x.size(0), w.size(1));
            Nd4j.gemm(u, params.get(LORA_B_KEY), t2, false, true, scaling, 0.0);  // t2 = s u Bᵀ        [n, nOut]
            z.addi(t1.mulRowVector(d.cMinus1())).addi(t2.mulRowVector(d.c()));     // z += (c−1)⊙t1 + c⊙t2
            INDArray qb = t1.addi(t2);                                              // qb = t1 + t2
            return new Forward(x, z, u, xLora, m, q, new Dora(d.norms(), d.c(), d.cMinus1(), qb));
        }
        Nd4j.gemm(u, params.get(LORA_B_KEY), z, false, true, scaling, 1.0);       // z += s u Bᵀ       [n, nOut]
        return new Forward(x, z, u, xLora, m, q, null);
    }

    /**
     * DoRA's forward without dropout (eval, or {@code p = 0}), as lora-core's {@code LoraLinear}:
     * {@code z = c ⊙ (x W + s·(x Aᵀ) Bᵀ) + b}, {@code c = m / ‖W + s·B·A‖} per output feature.
     */
    private Forward doraForward(INDArray x, INDArray z, Map<String, INDArray> params, boolean forBackprop,
            LayerWorkspaceMgr mgr, ArrayType work) {
        INDArray w = params.get(WEIGHT_KEY);
        INDArray a = params.get(LORA_A_KEY);
        Dora d = doraFactors(params, w.dataType());
        INDArray u = mgr.createUninitialized(work, w.dataType(), x.size(0), a.rows());
        Nd4j.gemm(x, a, u, false, true, 1.0, 0.0);                                 // u = x Aᵀ          [n, r]
        INDArray qb = forBackprop ? mgr.createUninitialized(work, w.dataType(), x.size(0), w.size(1)) : z;
        Nd4j.gemm(x, w, qb, false, false, 1.0, 0.0);                               // qb = x W          [n, nOut]
        Nd4j.gemm(u, params.get(LORA_B_KEY), qb, false, true, scaling, 1.0);      // qb += s u Bᵀ
        if (qb != z) {
            z.assign(qb);
        }
        z.muliRowVector(d.c());                                                    // z = c ⊙ qb
        if (conf.hasBias()) {
            z.addiRowVector(params.get(BIAS_KEY));                                 //   + b
        }
        return new Forward(x, z, u, x, null, 1.0, forBackprop ? new Dora(d.norms(), d.c(), d.cMinus1(), qb) : d);
    }

    /**
     * The norms {@code ‖W + s·B·A‖} per output feature (a column of DL4J's {@code W [nIn, nOut]}), by lora-core's
     * {@link DoraNorms} (the same computation as {@code LoraLinear}'s; recomputed on every forward, as PEFT does),
     * and the factors {@code c = m / norms}, {@code c − 1} in double, rounded to the network's type.
     */
    @SuppressWarnings("try") // the factors are tiny and must not depend on which workspace is open
    private Dora doraFactors(Map<String, INDArray> params, DataType type) {
        // W [nIn, nOut] f-order is PEFT's W [out, in] in row-major order: its transpose view reads rows in place
        double[] norms = DoraNorms.of(params.get(WEIGHT_KEY).transpose(), WeightLayout.OUT_IN, params.get(LORA_A_KEY),
                params.get(LORA_B_KEY), scaling);
        double[] m = params.get(MAGNITUDE_KEY).toDoubleVector();
        double[] c = new double[norms.length];
        double[] cm1 = new double[norms.length];
        for (int j = 0; j < c.length; j++) {
            c[j] = m[j] / norms[j];
            cm1[j] = c[j] - 1;
        }
        try (MemoryWorkspace ws = Nd4j.getMemoryManager().scopeOutOfWorkspaces()) {
            return new Dora(norms, Nd4j.createFromArray(c).castTo(type), Nd4j.createFromArray(cm1).castTo(type), null);
        }
    }

    /** The mask of the current input: drawn on the first training forward after {@link #newInput()}, then kept. */
    @SuppressWarnings("try") // the scope is the point: the mask must outlive the workspace of this iteration
    private INDArray maskFor(INDArray x) {
        if (mask == null || mask.rows() != x.rows() || mask.columns() != x.columns()
                || mask.dataType() != x.dataType()) {
            boolean[] kept = masks.next(x.length());
            double[] m = new double[kept.length];
            for (int i = 0; i < m.length; i++) {
                m[i] = kept[i] ? 1.0 : 0.0;
            }
            try (MemoryWorkspace ws = Nd4j.getMemoryManager().scopeOutOfWorkspaces()) {
                mask = Nd4j.createFromArray(m).castTo(x.dataType()).reshape('c', x.rows(), x.columns());
            }
        }
        return mask;
    }

    /**
     * Writes the gradients of {@code loraA} and {@code loraB} into the network's gradient views and returns them with
     * {@code dL/dx [n, nIn]} (before the layer's own dropout backprop); {@code delta = dL/dz [n, nOut]} (after
     * activation and mask), {@code f} the forward of this input.
     */
    Pair<Gradient, INDArray> backward(Forward f, INDArray delta, Map<String, INDArray> params,
            Map<String, INDArray> gradientViews, LayerWorkspaceMgr mgr, String layerId) {
        if (conf.merged()) {
            throw new IllegalStateException("cannot train layer " + layerId
                    + ": its adapter is merged into W; LoraDl4j.unmerge(net) first");
        }
        INDArray w = params.get(WEIGHT_KEY);
        INDArray g = delta.castTo(w.dataType());
        INDArray dx = mgr.createUninitialized(ArrayType.ACTIVATION_GRAD, w.dataType(), g.size(0), w.size(0));
        if (f.dora() != null) {
            return doraBackward(f, g, dx, params, gradientViews, mgr);
        }
        Nd4j.gemm(g, w, dx, false, true, 1.0, 0.0);                                  // dx = g Wᵀ       [n, nIn]
        Gradient gradient = new DefaultGradient();
        if (hasAdapter()) {
            INDArray a = params.get(LORA_A_KEY);
            INDArray gradA = gradientViews.get(LORA_A_KEY);
            INDArray gradB = gradientViews.get(LORA_B_KEY);
            INDArray gB = mgr.createUninitialized(ArrayType.BP_WORKING_MEM, w.dataType(), g.size(0), a.rows());
            Nd4j.gemm(g, params.get(LORA_B_KEY), gB, false, false, 1.0, 0.0);     // gB = g B        [n, r]
            Nd4j.gemm(g, f.u(), gradB, true, false, scaling, 0.0);                // dB = s gᵀ u     [nOut, r]
            Nd4j.gemm(gB, f.xLora(), gradA, true, false, scaling * f.q(), 0.0);   // dA = s q gBᵀ (x ⊙ m)  [r, nIn]
            if (f.mask() == null) {
                Nd4j.gemm(gB, a, dx, false, false, scaling, 1.0);                 // dx += s gB A
            } else {
                INDArray t = mgr.createUninitialized(ArrayType.BP_WORKING_MEM, w.dataType(), g.size(0), a.columns());
                Nd4j.gemm(gB, a, t, false, false, scaling * f.q(), 0.0);          // t = s q gB A    [n, nIn]
                dx.addi(t.muli(f.mask()));                                        // dx += t ⊙ m
            }
            gradient.gradientForVariable().put(LORA_A_KEY, gradA);
            gradient.gradientForVariable().put(LORA_B_KEY, gradB);
        }
        return new Pair<>(gradient, dx);
    }

    /**
     * DoRA's backward, as lora-core's {@code LoraLinear} (the norm a constant, PEFT's detach): with {@code gc = g ⊙ c},
     * {@code gB = gc B}, {@code x'} the LoRA input ({@code x ⊙ mask}, scaled by {@code q} in {@code u} and {@code dA}):
     * <pre>
     *   dm_j = Σ_i g_ij qb_ij / ‖W + s·B·A‖_j;   dB = s·gcᵀ u;   dA = s·q·gBᵀ x'
     *   dx   = gc Wᵀ + s·gB A                                      (no dropout)
     *   dx   = g Wᵀ + mask ⊙ q·((g ⊙ (c − 1)) Wᵀ + s·gB A)         (dropout)
     * </pre>
     */
    private Pair<Gradient, INDArray> doraBackward(Forward f, INDArray g, INDArray dx, Map<String, INDArray> params,
            Map<String, INDArray> gradientViews, LayerWorkspaceMgr mgr) {
        INDArray w = params.get(WEIGHT_KEY);
        INDArray a = params.get(LORA_A_KEY);
        Dora d = f.dora();
        INDArray gradA = gradientViews.get(LORA_A_KEY);
        INDArray gradB = gradientViews.get(LORA_B_KEY);
        INDArray gradM = gradientViews.get(MAGNITUDE_KEY);
        double[] dm = g.mul(d.qb()).sum(0).toDoubleVector();                       // Σ_i g ⊙ qb        [nOut]
        for (int j = 0; j < dm.length; j++) {
            gradM.putScalar(j, dm[j] / d.norms()[j]);                               // dm = Σ_i g⊙qb / ‖·‖
        }
        INDArray gc = mgr.createUninitialized(ArrayType.BP_WORKING_MEM, w.dataType(), g.size(0), g.size(1));
        gc.assign(g).muliRowVector(d.c());                                         // gc = g ⊙ c        [n, nOut]
        INDArray gB = mgr.createUninitialized(ArrayType.BP_WORKING_MEM, w.dataType(), g.size(0), a.rows());
        Nd4j.gemm(gc, params.get(LORA_B_KEY), gB, false, false, 1.0, 0.0);        // gB = gc B         [n, r]
        Nd4j.gemm(gc, f.u(), gradB, true, false, scaling, 0.0);                   // dB = s gcᵀ u      [nOut, r]
        Nd4j.gemm(gB, f.xLora(), gradA, true, false, scaling * f.q(), 0.0);       // dA = s q gBᵀ x'   [r, nIn]
        if (f.mask() == null) {
            Nd4j.gemm(gc, w, dx, false, true, 1.0, 0.0);                           // dx = gc Wᵀ        [n, nIn]
            Nd4j.gemm(gB, a, dx, false, false, scaling, 1.0);                      // dx += s gB A
        } else {
            Nd4j.gemm(g, w, dx, false, true, 1.0, 0.0);                            // dx = g Wᵀ         [n, nIn]
            INDArray gm = gc.assign(g).muliRowVector(d.cMinus1());                 // g ⊙ (c − 1)       [n, nOut]
            INDArray t = mgr.createUninitialized(ArrayType.BP_WORKING_MEM, w.dataType(), g.size(0), a.columns());
            Nd4j.gemm(gm, w, t, false, true, f.q(), 0.0);                          // t = q (g⊙(c−1)) Wᵀ
            Nd4j.gemm(gB, a, t, false, false, scaling * f.q(), 1.0);               // t += s q gB A
            dx.addi(t.muli(f.mask()));                                             // dx += t ⊙ mask
        }
        Gradient gradient = new DefaultGradient();
        gradient.gradientForVariable().put(LORA_A_KEY, gradA);
        gradient.gradientForVariable().put(LORA_B_KEY, gradB);
        gradient.gradientForVariable().put(MAGNITUDE_KEY, gradM);
        return new Pair<>(gradient, dx);
    }

    /**
     * {@code W += s·(B A)ᵀ} in place, lora-core's {@link MergeMode#EXACT} way, so that {@link #unmerge} restores
     * {@code W} bit for bit.
     */
    @SuppressWarnings("try") // the scope is the point: the merge record must outlive any open workspace
    void merge(Map<String, INDArray> params, String layerId) {
        requireAdapter(layerId);
        if (conf.merged()) {
            throw new IllegalStateException("layer " + layerId + " is already merged; unmerge first");
        }
        try (MemoryWorkspace ws = Nd4j.getMemoryManager().scopeOutOfWorkspaces()) {
            LoraLinear linear;
            try {
                linear = coreLayer(params, conf.loraConfig());
            } catch (IllegalArgumentException e) {
                // NaN or infinity in loraA/loraB is the network's state, not a bad argument: LoraDl4j.merge documents
                // IllegalStateException, as LoraLinear.merge throws for a non-finite adapter
                throw new IllegalStateException("cannot merge layer " + layerId + ": " + e.getMessage()
                        + " (diverged training?); W left unchanged", e);
            }
            linear.merge(MergeMode.EXACT);
            mergedHere = linear;
        }
        conf.markMerged(true);
    }

    /**
     * Takes the adapter out of {@code W}: bit-exact after {@link #merge} in this process; for a network restored
     * merged from a file (the exact record is not saved) by one gemm {@code W −= s·(B A)ᵀ}, which may differ from
     * the original {@code W} by an ulp per element.
     */
    void unmerge(Map<String, INDArray> params, String layerId) {
        requireAdapter(layerId);
        if (!conf.merged()) {
            throw new IllegalStateException("layer " + layerId + " is not merged; nothing to unmerge");
        }
        if (mergedHere != null) {
            mergedHere.unmerge();
            mergedHere = null;
        } else if (dora) {
            throw new IllegalStateException("cannot unmerge DoRA layer " + layerId + ": it was restored merged from a "
                    + "file, which holds W' = c ⊙ (W + s·B·A) but not the norms of W that c was computed from, so W "
                    + "cannot be recovered; use LoraDl4j.mergeAndUnload for inference, or save the network unmerged");
        } else {
            Nd4j.gemm(params.get(LORA_A_KEY), params.get(LORA_B_KEY), params.get(WEIGHT_KEY), true, true,
                    -scaling, 1.0);
        }
        conf.markMerged(false);
    }

    /** A new {@code [nIn, nOut]} array {@code W + s·(B A)ᵀ} (W itself when merged); the layer is not changed. */
    INDArray mergedWeight(Map<String, INDArray> params) {
        INDArray w = params.get(WEIGHT_KEY);
        if (!hasAdapter() || conf.merged()) {
            return w.dup('f');
        }
        if (dora) {
            return mergedDora(params);
        }
        INDArray out = w.dup('f');
        Nd4j.gemm(params.get(LORA_A_KEY), params.get(LORA_B_KEY), out, true, true, scaling, 1.0);
        return out;
    }

    /** DoRA's merged weight {@code c ⊙ (W + s·(B A)ᵀ)} by lora-core's {@code mergedWeight} (W is only read). */
    @SuppressWarnings("try") // the result must outlive any open workspace
    private INDArray mergedDora(Map<String, INDArray> params) {
        try (MemoryWorkspace ws = Nd4j.getMemoryManager().scopeOutOfWorkspaces()) {
            return coreLayer(params, conf.loraConfig()).mergedWeight().dup('f');
        }
    }

    /**
     * A lora-core layer over this layer's {@code W} (referenced, in DL4J's {@code [nIn, nOut]} layout, not copied; no
     * bias) holding a copy of its adapter ({@code A}, {@code B} and, for DoRA, {@code m}) as the active
     * {@link LoraLinear#DEFAULT_ADAPTER}: what merging and DoRA's merged weight compute with, so they are lora-core's
     * own arithmetic. For a merge the layer is the merge's state (the exact-unmerge record, W's claim among merged
     * weights, DoRA's factors), kept in {@code mergedHere} until the unmerge; saving needs no layer
     * ({@link io.github.lora4j.io.AdapterTensors}).
     *
     * @throws IllegalArgumentException if an adapter array holds NaN or infinity (nothing changed)
     */
    static LoraLinear coreLayer(Map<String, INDArray> params, LoraConfig config) {
        LoraLinear linear = LoraLinear.base(params.get(WEIGHT_KEY), null, WeightLayout.IN_OUT);
        linear.addAdapter(LoraLinear.DEFAULT_ADAPTER, config.toBuilder().init(LoraInit.ZERO).build());
        linear.setActiveAdapter(LoraLinear.DEFAULT_ADAPTER);
        if (config.useDora()) {
            linear.setAdapterWeights(LoraLinear.DEFAULT_ADAPTER, params.get(LORA_A_KEY), params.get(LORA_B_KEY),
                    params.get(MAGNITUDE_KEY));
        } else {
            linear.setAdapterWeights(LoraLinear.DEFAULT_ADAPTER, params.get(LORA_A_KEY), params.get(LORA_B_KEY));
        }
        return linear;
    }

    private void requireAdapter(String layerId) {
        if (!hasAdapter()) {
            throw new IllegalStateException("layer " + layerId + " has no LoRA adapter (it is a frozen base layer)");
        }
    }
}
