"""The synthetic world: a bank extract, a data vendor's users and the ground truth that ties them.

Everything is a pure function of `WorldConfig`: the same seed gives byte-identical Parquet files.
Files under `out/`:

    bank/customers.parquet     the bank's extract: ~70 features, dirty phones, ID numbers, the
                               device ids its app knows, label
    bank/campaign.parquet      a past A/B campaign on unregistered customers (treatment, responded)
    vendor/users.parquet       the vendor's users: phone, app usage lists, interest tag lists,
                               ID number and device id where the vendor holds them
    truth/personas.parquet     latent personas of every person (bank customer and/or vendor row)
    truth/propensity.parquet   true P(open mobile banking), true response under control/treatment
    truth/intersection.parquet each customer's true best-identifier vendor user (phone > ID
                               number > device id), and which identifier links it
    world.json                 config, summary and the sha256 of every Parquet file

The truth model. Every person has a latent persona (gamer, investor, senior...) and maybe a second
one. Personas drive app and tag usage at the vendor and shift some bank features mildly (investors
hold more assets, seniors are older), so they are visible in vendor data and barely in bank data.
A second latent trait, "fintech" (heavy use of payment, wealth and other banks' apps), shows only
in vendor data. The label and the past campaign follow from both (`campaign`).

The modules, in the order a world is drawn:

    personas   the latent truth: personas, the fintech trait, the link function
    bank       the bank's features, ID numbers and extract
    phones     who owns which number and how the bank and the vendor write it (shared with
               `labs.scale`)
    identifiers  ID numbers and device ids at the vendor, device ids and old numbers at the bank
    campaign   registration, the label and the past campaign, with their true probabilities
    vendor     the vendor's users and their app and tag lists, written chunk by chunk
    truth      the ground-truth frames
    generate   `generate_world`: the streams, the order of the draws, the files and the summary
    execution  a campaign executed: funnel events drawn from the true propensities and uplift
    journeys   a new-to-app cohort's 100 days, a day at a time, answering the journey engine's
               touches, and the true effects of a strategy (`journey_truth`: hazards, effects)
    config, files, errors   the config and summary, the file layout, `WorldError`
"""

from labs.world.bank import FEATURE_COLUMNS
from labs.world.config import WorldConfig, WorldSummary
from labs.world.errors import WorldError
from labs.world.files import WorldFiles, load_world
from labs.world.generate import generate_world
from labs.world.journeys import JourneyConfig, JourneySimulator
from labs.world.personas import PERSONAS

__all__ = [
    "FEATURE_COLUMNS",
    "PERSONAS",
    "JourneyConfig",
    "JourneySimulator",
    "WorldConfig",
    "WorldError",
    "WorldFiles",
    "WorldSummary",
    "generate_world",
    "load_world",
]
