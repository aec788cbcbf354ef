package io.github.lora4j.dl4j;

import java.util.Arrays;
import org.deeplearning4j.nn.conf.CNN2DFormat;
import org.deeplearning4j.nn.conf.NeuralNetConfiguration;
import org.deeplearning4j.nn.gradient.DefaultGradient;
import org.deeplearning4j.nn.gradient.Gradient;
import org.deeplearning4j.nn.layers.normalization.BatchNormalization;
import org.deeplearning4j.nn.params.BatchNormalizationParamInitializer;
import org.deeplearning4j.nn.workspace.ArrayType;
import org.deeplearning4j.nn.workspace.LayerWorkspaceMgr;
import org.nd4j.common.primitives.Pair;
import org.nd4j.linalg.api.buffer.DataType;
import org.nd4j.linalg.api.ndarray.INDArray;
import org.nd4j.linalg.factory.Broadcast;
import org.nd4j.linalg.factory.Nd4j;
import org.nd4j.linalg.ops.transforms.Transforms;

/**
 * The layer of a {@link FrozenBatchNormalization}: DL4J's BatchNormalization, always in inference mode, with the
 * backward of that affine map ({@code dL/dx = dL/dy · γ/√(σ² + ε)} per channel) and no gradient for any parameter.
 */
public class FrozenBatchNormalizationImpl extends BatchNormalization {

    private static final long serialVersionUID = 1L;

    /**
     * @param conf     the layer's configuration, holding a {@link FrozenBatchNormalization}
     * @param dataType the network's data type
     */
    public FrozenBatchNormalizationImpl(NeuralNetConfiguration conf, DataType dataType) {
        super(conf, dataType);
    }

    /** DL4J's inference forward (running statistics), in training too. */
    @Override
    public INDArray activate(boolean training, LayerWorkspaceMgr workspaceMgr) {
        return super.activate(false, workspaceMgr);
    }

    @Override
    public Pair<Gradient, INDArray> backpropGradient(INDArray epsilon, LayerWorkspaceMgr workspaceMgr) {
        assertInputSet(true);
        org.deeplearning4j.nn.conf.layers.BatchNormalization c = layerConf();
        INDArray var;
        if (c.isUseLogStd()) {   // σ² = (10^log10σ)², as DL4J's inference forward computes it
            INDArray log10s = getParam(BatchNormalizationParamInitializer.GLOBAL_LOG_STD);
            var = Transforms.pow(Nd4j.valueArrayOf(log10s.shape(), 10.0, dataType), log10s);
            var.muli(var);
        } else {
            var = getParam(BatchNormalizationParamInitializer.GLOBAL_VAR);
        }
        INDArray factor = Transforms.sqrt(var.add(c.getEps()));                    // √(σ² + ε)
        factor = c.isLockGammaBeta() ? Transforms.pow(factor, -1).muli(c.getGamma())
                : getParam(BatchNormalizationParamInitializer.GAMMA).div(factor);   // γ / √(σ² + ε)   [C]
        factor = factor.reshape(factor.length()).castTo(epsilon.dataType());
        int channel;
        if (epsilon.rank() == 2) {
            channel = 1;
        } else if (epsilon.rank() == 4) {
            channel = c.getCnn2DFormat() == CNN2DFormat.NHWC ? 3 : 1;
        } else {
            throw new IllegalStateException("a frozen BatchNormalization backpropagates [minibatch, C] or 4-d "
                    + "convolutional activations (as DL4J's own); got gradient shape "
                    + Arrays.toString(epsilon.shape()) + " " + layerId());
        }
        INDArray dx = workspaceMgr.createUninitialized(ArrayType.ACTIVATION_GRAD, epsilon.dataType(), epsilon.shape(),
                epsilon.ordering());
        Broadcast.mul(epsilon, factor, dx, channel);                                // dx = dy · γ/√(σ² + ε)
        return new Pair<>(new DefaultGradient(), dx);
    }

    @Override
    public void fit(INDArray input, LayerWorkspaceMgr workspaceMgr) {
        throw new UnsupportedOperationException("a frozen BatchNormalization is not trained");
    }
}
